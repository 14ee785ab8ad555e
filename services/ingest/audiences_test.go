package ingest

import (
	"fmt"
	"testing"

	"github.com/parleychat/parley/pkg/server/membership"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

func announceCmd(id, selector, text string) *logv1.Command {
	return &logv1.Command{UserId: "system", DeviceId: "backend:app", ClientMsgId: id,
		Body: &logv1.Command_Announce{Announce: &logv1.Announce{Selector: selector, Text: text}}}
}

func TestAnnounce(t *testing.T) {
	l := newContactLog(t)
	aud := membership.AudienceID("region=eu")
	out, recs := l.run(announceCmd("b-1", "region=eu", "maintenance"))
	if out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED || out.GetSeq() != 2 || out.GetConversationId() != aud || len(recs) != 2 {
		t.Fatalf("first broadcast: %v, %d records", out, len(recs))
	}
	created, post := recs[0].GetEvent(), recs[1].GetEvent()
	if cc := created.GetConversationCreated(); cc.GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_AUDIENCE || cc.GetTitle() != "region=eu" ||
		fmt.Sprint(cc.GetMemberIds()) != "[aud:region=eu]" {
		t.Fatalf("the audience: %v", created)
	}
	if !post.GetMessagePosted().GetSystem() || post.GetMessagePosted().GetText() != "maintenance" || fmt.Sprint(recs[1].GetRecipientIds()) != "[aud:region=eu]" {
		t.Fatalf("the broadcast: %v", recs[1])
	}
	if out, recs := l.run(announceCmd("b-1", "region=eu", "maintenance")); !out.GetDuplicate() || out.GetSeq() != 2 || len(recs) != 0 {
		t.Fatalf("retried: %v, %d records", out, len(recs))
	}
	if out, recs := l.run(announceCmd("b-2", "region=eu", "done")); out.GetSeq() != 3 || len(recs) != 1 {
		t.Fatalf("second broadcast: %v, %d records", out, len(recs))
	}
	for name, cmd := range map[string]*logv1.Command{
		"bad selector": announceCmd("b-3", "Region=eu", "x"),
		"no value":     announceCmd("b-4", "region=", "x"),
		"no text":      announceCmd("b-5", "region=eu", ""),
	} {
		if out, _ := l.run(cmd); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
			t.Errorf("%s: %v", name, out)
		}
	}
	// Nobody posts in an audience: a user is no member of it.
	if out, _ := l.run(postCmd(aud, "alice", "m1", "hi all")); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("a user posting in an audience: %v", out)
	}
	// A reader marks and mutes it only with an edge's word that they
	// belong to it; their receipt is pushed to them alone.
	mark := markCmd(aud, "alice", "a1", 3, 3)
	if out, _ := l.run(mark); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("a mark without the audience's grant: %v", out)
	}
	wrong := markCmd(aud, "alice", "a1", 3, 3)
	wrong.Audience = membership.AudienceMember("region=us")
	if out, _ := l.run(wrong); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("a mark with another audience's grant: %v", out)
	}
	granted := markCmd(aud, "alice", "a1", 3, 3)
	granted.Audience = membership.AudienceMember("region=eu")
	out, recs = l.run(granted)
	if out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED || out.GetReceipt().GetReadSeq() != 3 || len(recs) != 1 || fmt.Sprint(recs[0].GetRecipientIds()) != "[alice]" {
		t.Fatalf("a granted mark: %v, %v", out, recs)
	}
	muted := true
	mute := &logv1.Command{ConversationId: aud, UserId: "alice", Audience: membership.AudienceMember("region=eu"), Body: &logv1.Command_SetFlags{SetFlags: &logv1.SetFlags{Muted: &muted}}}
	if out, recs := l.run(mute); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED || !out.GetFlags().GetMuted() || fmt.Sprint(recs[0].GetRecipientIds()) != "[alice]" {
		t.Fatalf("muting the audience: %v, %v", out, recs)
	}
	// The rebuilt aggregate answers a retry the same.
	rebuilt := map[string]*conversation{}
	for _, r := range l.recs {
		replay(rebuilt, r)
	}
	if d := decideCommand(rebuilt, &logv1.Command{CommandId: "again", ConversationId: aud, UserId: "system", ClientMsgId: "b-2",
		Body: &logv1.Command_Announce{Announce: &logv1.Announce{Selector: "region=eu", Text: "done"}}}, 10, l.now); !d.out.GetDuplicate() || d.out.GetSeq() != 3 {
		t.Fatalf("retried after a rebuild: %v", d.out)
	}
}

func TestNotice(t *testing.T) {
	l := newContactLog(t)
	notice := func(id, owner, text string) *logv1.Command {
		return &logv1.Command{UserId: "system", DeviceId: "backend:app", ClientMsgId: id, Body: &logv1.Command_Notice{Notice: &logv1.Notice{OwnerId: owner, Text: text}}}
	}
	inbox := membership.InboxID("dave")
	out, recs := l.run(notice("n-1", "dave", "ready"))
	if out.GetSeq() != 2 || out.GetConversationId() != inbox || len(recs) != 2 || !recs[1].GetEvent().GetMessagePosted().GetSystem() || fmt.Sprint(recs[1].GetRecipientIds()) != "[dave]" {
		t.Fatalf("first notice: %v, %v", out, recs)
	}
	if out, recs := l.run(notice("n-1", "dave", "ready")); !out.GetDuplicate() || out.GetSeq() != 2 || len(recs) != 0 {
		t.Fatalf("retried: %v, %d records", out, len(recs))
	}
	// After a contact request the inbox exists: the next notice is one event.
	l.run(contactCmd("alice", &logv1.ContactRequest{UserId: "dave"}))
	if out, recs := l.run(notice("n-2", "dave", "again")); out.GetSeq() != 4 || len(recs) != 1 {
		t.Fatalf("a notice to an inbox that exists: %v, %d records", out, len(recs))
	}
	for name, cmd := range map[string]*logv1.Command{"bad user": notice("n-3", "not a user", "x"), "no text": notice("n-4", "dave", "")} {
		if out, _ := l.run(cmd); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
			t.Errorf("%s: %v", name, out)
		}
	}
}
