package ingest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

func richCmd(conv, user, id string, p *logv1.PostMessage) *logv1.Command {
	return &logv1.Command{CommandId: "cmd-" + id, ConversationId: conv, UserId: user, ClientMsgId: id,
		Body: &logv1.Command_PostMessage{PostMessage: p}}
}

func editCmd(conv, user, id string, target uint64, text string, mentions ...string) *logv1.Command {
	return &logv1.Command{CommandId: "cmd-" + id, ConversationId: conv, UserId: user, ClientMsgId: id,
		Body: &logv1.Command_EditMessage{EditMessage: &logv1.EditMessage{TargetSeq: target, Text: text, MentionIds: mentions}}}
}

func deleteCmd(conv, user, id string, target uint64) *logv1.Command {
	return &logv1.Command{CommandId: "cmd-" + id, ConversationId: conv, UserId: user, ClientMsgId: id,
		Body: &logv1.Command_DeleteMessage{DeleteMessage: &logv1.DeleteMessage{TargetSeq: target}}}
}

func reactCmd(conv, user, id string, target uint64, emoji string, remove bool) *logv1.Command {
	return &logv1.Command{CommandId: "cmd-" + id, ConversationId: conv, UserId: user, ClientMsgId: id,
		Body: &logv1.Command_React{React: &logv1.React{TargetSeq: target, Emoji: emoji, Remove: remove}}}
}

func image(url string) *chatv1.Attachment {
	return &chatv1.Attachment{Kind: chatv1.AttachmentKind_ATTACHMENT_KIND_IMAGE, Url: url, ContentType: "image/png", SizeBytes: 10, Width: 2, Height: 3, Name: "a.png"}
}

// TestDecideMessages covers who may edit, delete and react to what, and
// the no-op rules of reactions. Every group starts alice (creator, so
// moderator), bob and carol; seq 2 is bob's message.
func TestDecideMessages(t *testing.T) {
	const (
		ok         = chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED
		notFound   = chatv1.ErrorCode_ERROR_CODE_MESSAGE_NOT_FOUND
		deleted    = chatv1.ErrorCode_ERROR_CODE_MESSAGE_DELETED
		notAuthor  = chatv1.ErrorCode_ERROR_CODE_NOT_AUTHOR
		notMember  = chatv1.ErrorCode_ERROR_CODE_NOT_FOUND // as for a missing conversation
		mentionOut = chatv1.ErrorCode_ERROR_CODE_MENTION_NOT_MEMBER
	)
	type step struct {
		cmd  *logv1.Command
		seq  uint64
		dup  bool
		code chatv1.ErrorCode
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"edit by the author only", []step{
			{editCmd("g", "bob", "e1", 2, "fixed"), 3, false, ok},
			{editCmd("g", "carol", "e2", 2, "mine now"), 0, false, notAuthor},
			{editCmd("g", "alice", "e3", 2, "moderators do not edit"), 0, false, notAuthor},
			{editCmd("g", "mallory", "e4", 2, "x"), 0, false, notMember},
			{editCmd("g", "bob", "e5", 2, "again"), 4, false, ok},
			{editCmd("g", "bob", "e1", 2, "fixed"), 3, true, ok}, // retry
		}},
		{"edit targets a message", []step{
			{editCmd("g", "bob", "e1", 1, "not a message"), 0, false, notFound},
			{editCmd("g", "bob", "e2", 9, "beyond the end"), 0, false, notFound},
			{editCmd("g", "bob", "e3", 2, "ok"), 3, false, ok},
			{editCmd("g", "bob", "e4", 3, "an edit is not a message"), 0, false, notFound},
		}},
		{"delete by the author or the moderator", []step{
			{deleteCmd("g", "carol", "d1", 2), 0, false, notAuthor},
			{deleteCmd("g", "mallory", "d2", 2), 0, false, notMember},
			{deleteCmd("g", "bob", "d3", 2), 3, false, ok},
			{deleteCmd("g", "bob", "d3", 2), 3, true, ok}, // retry
			{deleteCmd("g", "alice", "d4", 2), 0, false, deleted},
			{editCmd("g", "bob", "e1", 2, "too late"), 0, false, deleted},
			{reactCmd("g", "carol", "r1", 2, "👍", false), 0, false, deleted},
			{postCmd("g", "carol", "m9", "text"), 4, false, ok},
			{deleteCmd("g", "alice", "d5", 4), 5, false, ok}, // the creator moderates
		}},
		{"reactions: one per user per emoji", []step{
			{reactCmd("g", "carol", "r1", 2, "👍", false), 3, false, ok},
			{reactCmd("g", "carol", "r2", 2, "👍", false), 3, true, ok}, // already there: the seq that added it
			{reactCmd("g", "bob", "r1", 2, "👍", false), 4, false, ok},
			{reactCmd("g", "carol", "r3", 2, "🎉", false), 5, false, ok},
			{reactCmd("g", "carol", "r4", 2, "👍", true), 6, false, ok},
			{reactCmd("g", "carol", "r5", 2, "👍", true), 0, true, ok}, // nothing to remove
			{reactCmd("g", "carol", "r6", 2, "👍", false), 7, false, ok},
			{reactCmd("g", "carol", "r1", 2, "👍", false), 3, true, ok}, // a retry keeps its first answer
			{reactCmd("g", "mallory", "r7", 2, "👍", false), 0, false, notMember},
			{reactCmd("g", "carol", "r8", 1, "👍", false), 0, false, notFound},
			{reactCmd("g", "carol", "r9", 3, "👍", false), 0, false, notFound},
		}},
		{"replies and mentions", []step{
			{richCmd("g", "carol", "m1", &logv1.PostMessage{Text: "re", ReplyToSeq: 2}), 3, false, ok},
			{richCmd("g", "carol", "m2", &logv1.PostMessage{Text: "re", ReplyToSeq: 1}), 0, false, notFound},
			{richCmd("g", "carol", "m3", &logv1.PostMessage{Text: "re", ReplyToSeq: 40}), 0, false, notFound},
			{richCmd("g", "carol", "m4", &logv1.PostMessage{Text: "hey", MentionIds: []string{"bob", "alice"}}), 4, false, ok},
			{richCmd("g", "carol", "m5", &logv1.PostMessage{Text: "hey", MentionIds: []string{"bob", "dave"}}), 0, false, mentionOut},
			{editCmd("g", "bob", "e1", 2, "hey dave", "dave"), 0, false, mentionOut},
			{deleteCmd("g", "bob", "d1", 2), 5, false, ok},
			{richCmd("g", "carol", "m6", &logv1.PostMessage{Text: "re", ReplyToSeq: 2}), 0, false, deleted},
		}},
		{"the wrong conversation", []step{
			{editCmd("missing", "bob", "e1", 2, "x"), 0, false, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND},
			{reactCmd("missing", "bob", "r1", 2, "x", false), 0, false, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			convs := map[string]*conversation{}
			decide(convs, createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob", "carol"), 10, time.Unix(0, 0))
			if _, out := decide(convs, postCmd("g", "bob", "m0", "hello"), 10, time.Unix(0, 0)); out.GetSeq() != 2 {
				t.Fatalf("setup: %v", out)
			}
			for i, s := range tc.steps {
				rec, out := decide(convs, s.cmd, 10, time.Unix(0, 0))
				if out.GetErrorCode() != s.code || out.GetSeq() != s.seq || out.GetDuplicate() != s.dup {
					t.Fatalf("step %d: outcome %v, want seq %d dup %v code %v", i, out, s.seq, s.dup, s.code)
				}
				if (rec != nil) != (s.code == ok && !s.dup) {
					t.Fatalf("step %d: event %v", i, rec)
				}
			}
		})
	}
}

// TestDecideMessageEvents checks what the events carry: links found by the
// sequencer, mentions, and "latest" for the conversation list's preview.
func TestDecideMessageEvents(t *testing.T) {
	convs := map[string]*conversation{}
	now := time.Unix(0, 0)
	decide(convs, createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob"), 10, now)
	rec, _ := decide(convs, richCmd("g", "bob", "m1", &logv1.PostMessage{Text: "see https://example.com/a.", MentionIds: []string{"alice"}}), 10, now)
	mp := rec.GetEvent().GetMessagePosted()
	if len(mp.GetLinks()) != 1 || mp.GetLinks()[0].GetStart() != 4 || mp.GetLinks()[0].GetEnd() != 25 || fmt.Sprint(mp.GetMentionIds()) != "[alice]" {
		t.Fatalf("posted %v", mp)
	}
	rec, _ = decide(convs, editCmd("g", "bob", "e1", 2, "now http://x.org"), 10, now)
	if e := rec.GetEvent().GetMessageEdited(); !e.GetLatest() || len(e.GetLinks()) != 1 || e.GetLinks()[0].GetUrl() != "http://x.org" {
		t.Fatalf("edit of the latest message %v", e)
	}
	decide(convs, postCmd("g", "alice", "m2", "newer"), 10, now)
	rec, _ = decide(convs, editCmd("g", "bob", "e2", 2, "older"), 10, now)
	if rec.GetEvent().GetMessageEdited().GetLatest() {
		t.Fatalf("an older message's edit says latest")
	}
	rec, _ = decide(convs, deleteCmd("g", "alice", "d1", 4), 10, now)
	if !rec.GetEvent().GetMessageDeleted().GetLatest() {
		t.Fatalf("delete of the latest message does not say so")
	}
	// A reaction is not a message: the latest message stays seq 4.
	decide(convs, reactCmd("g", "bob", "r1", 2, "x", false), 10, now)
	if rec, _ = decide(convs, deleteCmd("g", "bob", "d2", 2), 10, now); rec.GetEvent().GetMessageDeleted().GetLatest() {
		t.Fatalf("delete of an older message says latest")
	}
}

// TestReplayRebuildsMessages: the aggregate rebuilt from the log decides
// edits, deletes and reactions as the live one does.
func TestReplayRebuildsMessages(t *testing.T) {
	live := map[string]*conversation{}
	var log []*logv1.EventRecord
	for _, cmd := range []*logv1.Command{
		createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob"),
		postCmd("g", "bob", "m1", "hi"),
		postCmd("g", "bob", "m2", "there"),
		reactCmd("g", "alice", "r1", 2, "👍", false),
		reactCmd("g", "bob", "r1", 2, "👍", false),
		reactCmd("g", "bob", "r2", 2, "👍", true),
		deleteCmd("g", "alice", "d1", 3),
		editCmd("g", "bob", "e1", 2, "hello"),
	} {
		if rec, out := decide(live, cmd, 10, time.Now()); rec != nil {
			log = append(log, rec)
		} else {
			t.Fatalf("setup: %v", out)
		}
	}
	rebuilt := map[string]*conversation{}
	for _, rec := range log {
		replay(rebuilt, rec)
		replay(rebuilt, rec)
	}
	dump := func(c *conversation) string {
		s := fmt.Sprint(c.sum.GetOwnerId(), c.lastMessage, c.reactions)
		for seq := range uint64(10) {
			if m := c.messages[seq]; m != nil {
				s += fmt.Sprint(seq, *m)
			}
		}
		return s
	}
	if a, b := dump(live["g"]), dump(rebuilt["g"]); a != b {
		t.Fatalf("rebuilt aggregate differs:\n live    %s\n rebuilt %s", a, b)
	}
	for _, tc := range []struct {
		cmd  *logv1.Command
		seq  uint64
		dup  bool
		code chatv1.ErrorCode
	}{
		{deleteCmd("g", "alice", "d9", 3), 0, false, chatv1.ErrorCode_ERROR_CODE_MESSAGE_DELETED},
		{reactCmd("g", "alice", "r9", 2, "👍", false), 4, true, chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED},
		{reactCmd("g", "bob", "r9", 2, "👍", true), 0, true, chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED},
		{deleteCmd("g", "alice", "d8", 2), 9, false, chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED},
	} {
		_, out := decide(rebuilt, tc.cmd, 10, time.Now())
		if out.GetSeq() != tc.seq || out.GetDuplicate() != tc.dup || out.GetErrorCode() != tc.code {
			t.Fatalf("after rebuild %v: %v", tc.cmd, out)
		}
	}
}

func TestPrepareMessages(t *testing.T) {
	invalid := chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	badURL := chatv1.ErrorCode_ERROR_CODE_INVALID_URL
	ok := chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	many := make([]*chatv1.Attachment, MaxAttachments+1)
	for i := range many {
		many[i] = image("https://cdn.example/x")
	}
	sized := func(size uint64, w, h uint32) *chatv1.Attachment {
		a := image("https://cdn.example/x")
		a.SizeBytes, a.Width, a.Height = size, w, h
		return a
	}
	withKind := func(k chatv1.AttachmentKind) *chatv1.Attachment {
		a := image("https://cdn.example/x")
		a.Kind = k
		return a
	}
	post := func(p *logv1.PostMessage) *logv1.Command { return richCmd("g", "alice", "m", p) }
	tests := []struct {
		name string
		cmd  *logv1.Command
		code chatv1.ErrorCode
	}{
		{"attachment only", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{image("https://cdn.example/a.png")}}), ok},
		{"text and attachments", post(&logv1.PostMessage{Text: "look", Attachments: many[:MaxAttachments]}), ok},
		{"too many attachments", post(&logv1.PostMessage{Attachments: many}), invalid},
		{"largest attachment", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{sized(MaxAttachmentBytes, MaxAttachmentPixels, MaxAttachmentPixels)}}), ok},
		{"attachment size past the bound", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{sized(MaxAttachmentBytes+1, 1, 1)}}), invalid},
		{"attachment size_bytes of 2^64-1", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{sized(^uint64(0), 1, 1)}}), invalid},
		{"attachment too wide", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{sized(1, MaxAttachmentPixels+1, 1)}}), invalid},
		{"attachment too tall", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{sized(1, 1, MaxAttachmentPixels+1)}}), invalid},
		{"nothing to show", post(&logv1.PostMessage{Text: " "}), invalid},
		{"oversize text with attachment", post(&logv1.PostMessage{Text: strings.Repeat("a", MaxTextBytes+1), Attachments: many[:1]}), invalid},
		{"unknown attachment kind", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{withKind(99)}}), invalid},
		{"unspecified attachment kind", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{withKind(0)}}), invalid},
		{"ftp url", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{image("ftp://cdn.example/x")}}), badURL},
		{"javascript url", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{image("javascript:alert(1)")}}), badURL},
		{"relative url", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{image("/x.png")}}), badURL},
		{"url without host", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{image("https:///x.png")}}), badURL},
		{"unparsable url", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{image("https://[::1/x")}}), badURL},
		{"url with a space", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{image("https://a.b/x y")}}), badURL},
		{"no url", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{image("")}}), badURL},
		{"long url", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{image("https://a.b/" + strings.Repeat("x", MaxURLBytes))}}), badURL},
		{"bad content type", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{{Kind: 1, Url: "https://a.b/", ContentType: "image/"}}}), invalid},
		{"name with a newline", post(&logv1.PostMessage{Attachments: []*chatv1.Attachment{{Kind: 4, Url: "https://a.b/", Name: "a\nb"}}}), invalid},
		{"contact", post(&logv1.PostMessage{Contact: &chatv1.ContactCard{DisplayName: "Bob", UserId: "bob", Email: "bob@example.com"}}), ok},
		{"contact without a name", post(&logv1.PostMessage{Contact: &chatv1.ContactCard{UserId: "bob"}}), invalid},
		{"contact with a bad email", post(&logv1.PostMessage{Contact: &chatv1.ContactCard{DisplayName: "Bob", Email: "nope"}}), invalid},
		{"contact with a bad user", post(&logv1.PostMessage{Contact: &chatv1.ContactCard{DisplayName: "Bob", UserId: "b b"}}), invalid},
		{"contact and attachment", post(&logv1.PostMessage{Contact: &chatv1.ContactCard{DisplayName: "Bob"}, Attachments: many[:1]}), invalid},
		{"bad mention", post(&logv1.PostMessage{Text: "hi", MentionIds: []string{"b b"}}), invalid},
		{"too many mentions", post(&logv1.PostMessage{Text: "hi", MentionIds: make([]string, MaxMentions+1)}), invalid},
		{"edit", editCmd("g", "alice", "e", 2, "new"), ok},
		{"edit without target", editCmd("g", "alice", "e", 0, "new"), invalid},
		{"edit to nothing", editCmd("g", "alice", "e", 2, "  "), invalid},
		{"edit too long", editCmd("g", "alice", "e", 2, strings.Repeat("a", MaxTextBytes+1)), invalid},
		{"edit invalid utf-8", editCmd("g", "alice", "e", 2, "\xff"), invalid},
		{"edit bad mention", editCmd("g", "alice", "e", 2, "x", "b b"), invalid},
		{"edit without client id", editCmd("g", "alice", "", 2, "x"), invalid},
		{"delete", deleteCmd("g", "alice", "d", 2), ok},
		{"delete without target", deleteCmd("g", "alice", "d", 0), invalid},
		{"react", reactCmd("g", "alice", "r", 2, "👍🏽", false), ok},
		{"react with a zwj sequence", reactCmd("g", "alice", "r", 2, "👩‍👩‍👧", false), ok},
		{"react with a short code", reactCmd("g", "alice", "r", 2, ":parrot:", false), ok},
		{"react without target", reactCmd("g", "alice", "r", 0, "👍", false), invalid},
		{"empty emoji", reactCmd("g", "alice", "r", 2, "", false), invalid},
		{"long emoji", reactCmd("g", "alice", "r", 2, strings.Repeat("👍", 9), false), invalid},
		{"emoji with a control char", reactCmd("g", "alice", "r", 2, "👍\x00", false), invalid},
		{"emoji with a space", reactCmd("g", "alice", "r", 2, "a b", false), invalid},
		{"emoji not utf-8", reactCmd("g", "alice", "r", 2, "\xf0\x9f", false), invalid},
		{"unreact without client id", reactCmd("g", "alice", "", 2, "x", true), invalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, msg := Prepare(tc.cmd); code != tc.code {
				t.Fatalf("Prepare = %v %q, want %v", code, msg, tc.code)
			}
		})
	}
	t.Run("mentions are deduplicated", func(t *testing.T) {
		cmd := post(&logv1.PostMessage{Text: "hi", MentionIds: []string{"bob", "carol", "bob"}})
		Prepare(cmd)
		if got := cmd.GetPostMessage().GetMentionIds(); fmt.Sprint(got) != "[bob carol]" {
			t.Fatalf("mentions %v", got)
		}
	})
}

func TestFindLinks(t *testing.T) {
	tests := []struct {
		text string
		want []string // text[start:end] of each span
	}{
		{"no links here", nil},
		{"https://example.com", []string{"https://example.com"}},
		{"go to http://a.b/c?d=e#f now", []string{"http://a.b/c?d=e#f"}},
		{"end of sentence https://a.b/c.", []string{"https://a.b/c"}},
		{"(see https://a.b/c)", []string{"https://a.b/c"}},
		{"https://en.wikipedia.org/wiki/A_(b) ok", []string{"https://en.wikipedia.org/wiki/A_(b)"}},
		{"HTTPS://A.B/X and https://c.d", []string{"HTTPS://A.B/X", "https://c.d"}},
		{"ftp://a.b mailto:x@y.z javascript:alert(1)", nil},
		{"http:// nothing", nil},
		{"xhttps://a.b glued", nil},
		{"<https://a.b/x>", []string{"https://a.b/x"}},
		{"ünïcödé first https://ä.example/ö then", []string{"https://ä.example/ö"}},
		{"İİİ https://a.b", []string{"https://a.b"}}, // lower-casing İ grows it: offsets must not
		{"two:https://a.b,https://c.d", []string{"https://a.b,https://c.d"}},
		{"https://[::1/broken", nil},
	}
	for _, tc := range tests {
		var got []string
		for _, l := range FindLinks(tc.text) {
			if l.GetStart() >= l.GetEnd() || int(l.GetEnd()) > len(tc.text) {
				t.Fatalf("%q: span %v out of bounds", tc.text, l)
			}
			got = append(got, tc.text[l.GetStart():l.GetEnd()])
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("FindLinks(%q) = %q, want %q", tc.text, got, tc.want)
		}
	}
	if n := len(FindLinks(strings.Repeat("https://a.b ", MaxLinks+5))); n != MaxLinks {
		t.Fatalf("%d links, want at most %d", n, MaxLinks)
	}
}

// TestReactionsPerMessageAreBounded: the aggregate's memory per message
// is bounded by distinct emoji; an emoji already there always counts.
func TestReactionsPerMessageAreBounded(t *testing.T) {
	convs := map[string]*conversation{}
	decide(convs, createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob"), 10, time.Unix(0, 0))
	decide(convs, postCmd("g", "alice", "m1", "hi"), 10, time.Unix(0, 0))
	for i := range maxReactionsPerMsg {
		if _, out := decide(convs, reactCmd("g", "alice", fmt.Sprint("r", i), 2, fmt.Sprint("e", i), false), 10, time.Unix(0, 0)); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			t.Fatalf("reaction %d: %v", i, out)
		}
	}
	if _, out := decide(convs, reactCmd("g", "bob", "x", 2, "one more", false), 10, time.Unix(0, 0)); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("reaction past the bound: %v", out)
	}
	if _, out := decide(convs, reactCmd("g", "bob", "y", 2, "e0", false), 10, time.Unix(0, 0)); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED || out.GetDuplicate() {
		t.Fatalf("an emoji already there: %v", out)
	}
}

// TestModeratorsAreOwnerAndAdmins: others' messages are deleted by the
// owner and admins of a group, by nobody in a direct conversation.
func TestModeratorsAreOwnerAndAdmins(t *testing.T) {
	group, direct := chatv1.ConversationKind_CONVERSATION_KIND_GROUP, chatv1.ConversationKind_CONVERSATION_KIND_DIRECT
	notAuthor := chatv1.ErrorCode_ERROR_CODE_NOT_AUTHOR
	convs := map[string]*conversation{}
	runSteps(t, convs, 10, []gstep{
		{cmd: createCmd("g", "alice", "c", group, "alice", "bob", "carol", "dave")},
		{cmd: richCmd("g", "dave", "p1", &logv1.PostMessage{Text: "one"})},   // seq 2
		{cmd: richCmd("g", "dave", "p2", &logv1.PostMessage{Text: "two"})},   // seq 3
		{cmd: richCmd("g", "dave", "p3", &logv1.PostMessage{Text: "three"})}, // seq 4
		{cmd: cmdOf("g", "alice", "r", &logv1.SetRole{UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_ADMIN})},
		{cmd: deleteCmd("g", "carol", "d1", 2), code: notAuthor},
		{cmd: deleteCmd("g", "bob", "d2", 2)},
		{cmd: deleteCmd("g", "alice", "d3", 3)},
		{cmd: cmdOf("g", "alice", "r2", &logv1.SetRole{UserId: "bob", Role: chatv1.MemberRole_MEMBER_ROLE_MEMBER})},
		{cmd: deleteCmd("g", "bob", "d4", 4), code: notAuthor},
		{cmd: createCmd("dm", "alice", "c", direct, "alice", "bob")},
		{cmd: richCmd("dm", "bob", "p1", &logv1.PostMessage{Text: "hi"})},
		{cmd: deleteCmd("dm", "alice", "d1", 2), code: notAuthor},
	})
}

// TestSystemPosts: the application posting as itself needs no
// membership, marks the message as system, and no member edits it as
// its author, even one named like the application's sender; the owner
// may still delete it.
func TestSystemPosts(t *testing.T) {
	convs := map[string]*conversation{}
	now := time.Unix(1_700_000_000, 0)
	// "app-notices" is also the name of a member: its own posts are its,
	// the application's are not.
	decide(convs, createCmd("g", "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "app-notices"), 10, now)
	post := func(conv, id string, system bool) (*logv1.EventRecord, *logv1.Outcome) {
		sender := "app-notices"
		if !system {
			sender = "mallory"
		}
		cmd := postCmd(conv, sender, id, "maintenance at 22:00")
		cmd.GetPostMessage().System = system
		return decide(convs, cmd, 10, now)
	}
	if _, out := post("g", "n0", false); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("a non-member's plain post: %v, want NOT_FOUND", out)
	}
	rec, out := post("g", "n1", true)
	if out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED || !rec.GetEvent().GetMessagePosted().GetSystem() || rec.GetEvent().GetSenderId() != "app-notices" {
		t.Fatalf("system post: %v %v, want a system message from app-notices", rec, out)
	}
	if _, out := post("nowhere", "n2", true); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("system post to no conversation: %v, want NOT_FOUND", out)
	}
	seq := rec.GetEvent().GetSeq()
	for _, user := range []string{"app-notices", "alice"} {
		edit := &logv1.Command{CommandId: "e-" + user, ConversationId: "g", UserId: user, ClientMsgId: "e-" + user,
			Body: &logv1.Command_EditMessage{EditMessage: &logv1.EditMessage{TargetSeq: seq, Text: "changed"}}}
		if _, out := decide(convs, edit, 10, now); out.GetErrorCode() == chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			t.Fatalf("%s edited the system message", user)
		}
	}
	del := &logv1.Command{CommandId: "d1", ConversationId: "g", UserId: "alice", ClientMsgId: "d1",
		Body: &logv1.Command_DeleteMessage{DeleteMessage: &logv1.DeleteMessage{TargetSeq: seq}}}
	if _, out := decide(convs, del, 10, now); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		t.Fatalf("the owner deleting the system message: %v", out)
	}
}
