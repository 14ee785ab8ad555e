package ingest

import (
	"fmt"
	"testing"

	"github.com/parleychat/parley/pkg/server/membership"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

func consentGroup(conv, user, id string, members ...string) *logv1.Command {
	c := createCmd(conv, user, id, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, members...)
	c.GetCreateConversation().Consent = true
	return c
}

func answerCmd(conv, user string, accept bool) *logv1.Command {
	return &logv1.Command{ConversationId: conv, UserId: user, DeviceId: user + "-phone",
		Body: &logv1.Command_AnswerInvitation{AnswerInvitation: &logv1.AnswerInvitation{Accept: accept}}}
}

// invitationItems renders the invitation items of owner's inbox in recs.
func invitationItems(recs []*logv1.EventRecord, owner string) string {
	var out []string
	for _, r := range recs {
		if ev := r.GetEvent(); ev.GetConversationId() == membership.InboxID(owner) {
			if u := ev.GetInvitationUpdated(); u != nil {
				out = append(out, fmt.Sprintf("%s by %s %s", u.GetConversationId(), u.GetInviterId(), u.GetAction()))
			}
		}
	}
	return fmt.Sprint(out)
}

func TestInvitations(t *testing.T) {
	const g = "0199a3c2-7a1e-7b51-9c1e-2f1f5c1d0a01"
	ok := chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	l := newContactLog(t)

	// A conversation with consent starts with its creator alone.
	if out, _ := l.run(consentGroup(g, "alice", "c0", "alice", "bob")); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("a consent group created with members: %v", out)
	}
	if out, _ := l.run(consentGroup(g, "alice", "c1", "alice")); out.GetErrorCode() != ok {
		t.Fatal(out)
	}

	// Adding bob invites him: the members see it, he is not in, and his
	// inbox says who invited him where.
	out, recs := l.run(addCmd(g, "alice", "a1", "bob"))
	if out.GetErrorCode() != ok || out.GetSeq() != 2 {
		t.Fatalf("invite: %v", out)
	}
	inv := recs[0]
	if inv.GetEvent().GetMemberInvited().GetUserId() != "bob" || fmt.Sprint(inv.GetRecipientIds()) != "[alice]" || l.convs[g].isMember("bob") {
		t.Fatalf("invitation %v; bob a member: %v", inv, l.convs[g].isMember("bob"))
	}
	if got := invitationItems(recs, "bob"); got != "["+g+" by alice INVITATION_ACTION_INVITED]" {
		t.Fatalf("bob's inbox: %s", got)
	}
	// Invited again: the same invitation, nothing new.
	if out, recs := l.run(addCmd(g, "alice", "a2", "bob")); !out.GetDuplicate() || out.GetSeq() != 2 || len(recs) != 0 {
		t.Fatalf("invited again: %v, %d records", out, len(recs))
	}
	// Nobody answers for him, and nothing else lets him in.
	if out, _ := l.run(answerCmd(g, "mallory", true)); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("mallory accepts: %v", out)
	}
	if out, _ := l.run(postCmd(g, "bob", "m0", "am I in?")); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("the invitee posts before accepting: %v", out)
	}

	// He accepts: a MemberJoined he receives, his other devices told.
	out, recs = l.run(answerCmd(g, "bob", true))
	if out.GetErrorCode() != ok || out.GetSeq() != 3 {
		t.Fatalf("accept: %v", out)
	}
	if j := recs[0].GetEvent(); j.GetMemberJoined().GetUserId() != "bob" || j.GetSenderId() != "bob" || fmt.Sprint(recs[0].GetRecipientIds()) != "[alice bob]" {
		t.Fatalf("joined: %v", recs[0])
	}
	if got := invitationItems(recs, "bob"); got != "["+g+" by alice INVITATION_ACTION_ACCEPTED]" {
		t.Fatalf("bob's inbox after accepting: %s", got)
	}
	if out, recs := l.run(answerCmd(g, "bob", true)); !out.GetDuplicate() || out.GetSeq() != 3 || len(recs) != 0 {
		t.Fatalf("accepted again: %v, %d records", out, len(recs))
	}

	// carol declines: a record the members are not sent, her inbox told.
	l.run(addCmd(g, "bob", "b1", "carol"))
	out, recs = l.run(answerCmd(g, "carol", false))
	if out.GetErrorCode() != ok || recs[0].GetDeclined().GetUserId() != "carol" || len(recs[0].GetRecipientIds()) != 0 {
		t.Fatalf("decline: %v, %v", out, recs)
	}
	if got := invitationItems(recs, "carol"); got != "["+g+" by bob INVITATION_ACTION_DECLINED]" {
		t.Fatalf("carol's inbox after declining: %s", got)
	}
	if l.convs[g].isMember("carol") {
		t.Fatal("carol declined, yet is a member")
	}
	if out, _ := l.run(answerCmd(g, "carol", true)); out.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("accepting a declined invitation: %v", out)
	}
	// Invited anew, she may say yes.
	l.run(addCmd(g, "alice", "a3", "carol"))
	if out, _ := l.run(answerCmd(g, "carol", true)); out.GetErrorCode() != ok {
		t.Fatalf("accepting a second invitation: %v", out)
	}

	// A group without consent adds as before.
	const plain = "0199a3c2-7a1e-7b51-9c1e-2f1f5c1d0a02"
	l.run(createCmd(plain, "alice", "p1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice"))
	if _, recs := l.run(addCmd(plain, "alice", "p2", "dave")); recs[0].GetEvent().GetMemberAdded().GetUserId() != "dave" || len(recs) != 1 {
		t.Fatalf("added without consent: %v", recs)
	}

	// The aggregates rebuilt from the log hold the same invitations.
	l.run(addCmd(g, "alice", "a4", "erin"))
	rebuilt := map[string]*conversation{}
	for _, r := range l.recs {
		replay(rebuilt, r)
	}
	live, got := l.convs[g], rebuilt[g]
	if fmt.Sprint(got.invited, got.invitedAt, got.members(), got.sum.GetConsent()) != fmt.Sprint(live.invited, live.invitedAt, live.members(), live.sum.GetConsent()) {
		t.Fatalf("rebuilt %v %v %v, live %v %v %v", got.invited, got.invitedAt, got.members(), live.invited, live.invitedAt, live.members())
	}
	if fmt.Sprint(got.invited) != "map[erin:alice]" {
		t.Fatalf("pending invitations %v, want erin's", got.invited)
	}
}
