package platform_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// TestRichMessages runs rich messages, edits, deletes and reactions
// through the WebSocket protocol with the SDK: live events, history as it
// is now, the conversation list's preview, and the errors, including that
// a non-member can do none of it.
func TestRichMessages(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice := e.dial("alice", "alice-phone", true) // protojson
	bob := e.dial("bob", "bob-phone", false)
	mallory := e.dial("mallory", "mallory-phone", false)

	acc, err := alice.CreateGroup(ctx, "team", "bob", "carol")
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()
	img := &chatv1.Attachment{Kind: chatv1.AttachmentKind_ATTACHMENT_KIND_IMAGE, Url: "https://cdn.example/cat.png",
		ContentType: "image/png", SizeBytes: 1234, Width: 640, Height: 480, Name: "cat.png"}

	posted, err := bob.SendRich(ctx, &clientv1.SendMessage{ConversationId: conv, Text: "cat, see https://example.com/cat.",
		Attachments: []*chatv1.Attachment{img}, MentionIds: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	msg := posted.GetSeq() // 2
	reply, err := alice.SendRich(ctx, &clientv1.SendMessage{ConversationId: conv, Text: "nice", ReplyToSeq: msg})
	if err != nil {
		t.Fatal(err)
	}
	card, err := alice.SendRich(ctx, &clientv1.SendMessage{ConversationId: conv, Contact: &chatv1.ContactCard{DisplayName: "Carol", UserId: "carol"}})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("live events carry the rich message and its links", func(t *testing.T) {
		evs := alice.upTo(t, conv, card.GetSeq())
		m := evs[msg-1].GetMessagePosted()
		if !proto.Equal(m.GetAttachments()[0], img) || m.GetMentionIds()[0] != "alice" || len(m.GetLinks()) != 1 {
			t.Fatalf("posted %v", m)
		}
		text := m.GetText()
		if l := m.GetLinks()[0]; text[l.GetStart():l.GetEnd()] != "https://example.com/cat" {
			t.Fatalf("link span %v in %q", l, text)
		}
		if evs[reply.GetSeq()-1].GetMessagePosted().GetReplyToSeq() != msg {
			t.Fatalf("reply %v", evs[reply.GetSeq()-1])
		}
	})

	t.Run("errors have stable codes", func(t *testing.T) {
		_, err := bob.SendRich(ctx, &clientv1.SendMessage{ConversationId: conv, Attachments: []*chatv1.Attachment{{Kind: 1, Url: "ftp://x.y/z"}}})
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_INVALID_URL)
		_, err = bob.SendRich(ctx, &clientv1.SendMessage{ConversationId: conv, Attachments: []*chatv1.Attachment{{Kind: 42, Url: "https://x.y/z"}}})
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		_, err = bob.SendRich(ctx, &clientv1.SendMessage{ConversationId: conv, Text: strings.Repeat("x", 16<<10+1)})
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		_, err = bob.SendRich(ctx, &clientv1.SendMessage{ConversationId: conv, Text: "re", ReplyToSeq: 1})
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_MESSAGE_NOT_FOUND)
		_, err = bob.SendRich(ctx, &clientv1.SendMessage{ConversationId: conv, Text: "re", ReplyToSeq: 999})
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_MESSAGE_NOT_FOUND)
		_, err = bob.SendRich(ctx, &clientv1.SendMessage{ConversationId: conv, Text: "hi", MentionIds: []string{"mallory"}})
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_MENTION_NOT_MEMBER)
		_, err = alice.Edit(ctx, conv, msg, "not mine")
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_AUTHOR)
		_, err = bob.Delete(ctx, conv, reply.GetSeq())
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_AUTHOR)
		_, err = bob.React(ctx, conv, msg, "")
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
		_, err = bob.React(ctx, conv, 1, "👍")
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_MESSAGE_NOT_FOUND)
	})

	t.Run("a non-member can neither edit, delete nor react", func(t *testing.T) {
		_, err := mallory.Edit(ctx, conv, msg, "x")
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
		_, err = mallory.Delete(ctx, conv, msg)
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
		_, err = mallory.React(ctx, conv, msg, "👍")
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
		_, err = mallory.Unreact(ctx, conv, msg, "👍")
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
	})

	var last uint64
	t.Run("edit, react, delete: live and in history", func(t *testing.T) {
		ed, err := bob.Edit(ctx, conv, msg, "a cat: http://cats.example")
		if err != nil {
			t.Fatal(err)
		}
		r1, err := alice.React(ctx, conv, msg, "👍")
		if err != nil {
			t.Fatal(err)
		}
		again, err := alice.React(ctx, conv, msg, "👍")
		if err != nil || !again.GetDuplicate() || again.GetSeq() != r1.GetSeq() {
			t.Fatalf("second identical reaction = %v, %v; want a duplicate of seq %d", again, err, r1.GetSeq())
		}
		if _, err := bob.React(ctx, conv, msg, "👍"); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.React(ctx, conv, msg, "🎉"); err != nil {
			t.Fatal(err)
		}
		un, err := bob.Unreact(ctx, conv, msg, "🎉")
		if err != nil || un.GetDuplicate() {
			t.Fatalf("unreact = %v, %v", un, err)
		}
		none, err := bob.Unreact(ctx, conv, msg, "🎉")
		if err != nil || !none.GetDuplicate() || none.GetSeq() != 0 {
			t.Fatalf("unreact of nothing = %v, %v", none, err)
		}
		// The moderator (the creator) deletes the contact card, the
		// latest message.
		del, err := alice.Delete(ctx, conv, card.GetSeq())
		if err != nil {
			t.Fatal(err)
		}
		last = del.GetSeq()
		evs := bob.upTo(t, conv, last)
		if got := evs[len(evs)-1].GetMessageDeleted(); got.GetTargetSeq() != card.GetSeq() || !got.GetLatest() {
			t.Fatalf("live delete %v", evs[len(evs)-1])
		}
		var edit *chatv1.Event
		for _, ev := range evs {
			if ev.GetSeq() == ed.GetSeq() {
				edit = ev
			}
		}
		if edit.GetMessageEdited().GetTargetSeq() != msg || edit.GetMessageEdited().GetText() != "a cat: http://cats.example" || len(edit.GetMessageEdited().GetLinks()) != 1 {
			t.Fatalf("live edit %v", edit)
		}

		waitHistory(t, bob.Client, conv, last)
		p, err := alice.History(ctx, &clientv1.GetHistory{ConversationId: conv, AfterSeq: proto.Uint64(0), Limit: 50})
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(p.GetEvents())) != last {
			t.Fatalf("history has %d events, want every one of %d (edits, reactions and deletes included)", len(p.GetEvents()), last)
		}
		m := p.GetEvents()[msg-1].GetMessagePosted()
		if m.GetText() != "a cat: http://cats.example" || m.GetEditedSeq() != ed.GetSeq() || !proto.Equal(m.GetAttachments()[0], img) {
			t.Fatalf("edited message in history %v", m)
		}
		if got := m.GetReactions(); len(got) != 1 || got[0].GetEmoji() != "👍" || got[0].GetCount() != 2 || !got[0].GetMe() {
			t.Fatalf("reactions as alice sees them %v", got)
		}
		if c := p.GetEvents()[card.GetSeq()-1].GetMessagePosted(); !c.GetDeleted() || c.GetContact() != nil {
			t.Fatalf("deleted message in history %v", c)
		}
		list, err := bob.Conversations(ctx, 0)
		if err != nil || len(list) != 1 {
			t.Fatal(list, err)
		}
		if c := list[0]; c.GetLastMessageSeq() != card.GetSeq() || !c.GetLastMessageDeleted() || c.GetLastMessagePreview() != "" || c.GetLastMessageKind() != chatv1.MessageKind_MESSAGE_KIND_CONTACT {
			t.Fatalf("preview after deleting the latest message %v", c)
		}
	})

	t.Run("a deleted message can no longer be touched", func(t *testing.T) {
		_, err := alice.Delete(ctx, conv, card.GetSeq())
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_MESSAGE_DELETED)
		_, err = bob.React(ctx, conv, card.GetSeq(), "👍")
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_MESSAGE_DELETED)
	})

	t.Run("frames by hand, as protojson", func(t *testing.T) {
		ws := authed(t, e, "bob", wire.SubprotocolJSON)
		for _, tc := range []struct{ frame, want string }{
			{`{"requestId":"r1","react":{"conversationId":"` + conv + `","clientMsgId":"h1","targetSeq":"2","emoji":"🔥"}}`, "accepted"},
			{`{"requestId":"r2","editMessage":{"conversationId":"` + conv + `","clientMsgId":"h2","targetSeq":"2","text":""}}`, "ERROR_CODE_INVALID_ARGUMENT"},
			{`{"requestId":"r3","deleteMessage":{"conversationId":"` + conv + `","clientMsgId":"h3","targetSeq":"3"}}`, "ERROR_CODE_NOT_AUTHOR"},
			{`{"requestId":"r4","react":{"conversationId":"` + conv + `","clientMsgId":"h4","targetSeq":"2","emoji":"🔥","bogus":1}}`, "ERROR_CODE_MALFORMED_FRAME"},
		} {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := ws.Write(wctx, websocket.MessageText, []byte(tc.frame)); err != nil {
				cancel()
				t.Fatal(err)
			}
			cancel()
			// Skip pushed events; the answer carries the request id, or
			// none for a frame that did not decode.
			for {
				f := readFrame(t, ws, wire.JSON)
				if f.GetEvents() != nil || f.GetReceipts() != nil {
					continue
				}
				got := "accepted"
				if f.GetError() != nil {
					got = f.GetError().GetCode().String()
				}
				if got != tc.want {
					t.Fatalf("%s: got %v, want %s", tc.frame, f, tc.want)
				}
				break
			}
		}
	})
}
