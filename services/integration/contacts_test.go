package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/services/ingest"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// waitExists waits until persistence serves conv to cl: an inbox or a
// direct conversation is created by a command handed on after the answer,
// and stored a moment after that.
func waitExists(t *testing.T, ctx context.Context, cl *sdk.Client, conv string) {
	t.Helper()
	eventually(t, cl.DeviceID+" sees "+conv, func() error {
		_, err := cl.History(ctx, &clientv1.GetHistory{ConversationId: conv, Limit: 1})
		return err
	})
}

// TestContactRequestToOfflineUser (real stack, two edges): alice asks bob,
// who has no device connected; the request waits in his inbox; each of
// his devices, on either edge, finds it when it connects; one accepts;
// alice's inbox and bob's other device are told; the direct conversation
// of the two is open, and both contact lists agree.
func TestContactRequestToOfflineUser(t *testing.T) {
	s := requireStack(t)
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	item := func(ev *chatv1.Event) string {
		u := ev.GetContactUpdated()
		return fmt.Sprintf("%s %s outgoing=%v %s", u.GetUserId(), u.GetAction(), u.GetOutgoing(), u.GetState())
	}
	run := fmt.Sprint(time.Now().UnixNano())
	alice, bob := "alice-"+run, "bob-"+run

	a := discardEvents(c.dial(0, alice, "a1"))
	if st, err := a.RequestContact(ctx, bob); err != nil || st != chatv1.ContactState_CONTACT_STATE_OUTGOING {
		t.Fatalf("request: %v, %v", st, err)
	}
	waitExists(t, ctx, a, a.InboxID)
	if got := catchUp(t, ctx, a, a.InboxID, 0, 2); item(got[1]) != bob+" CONTACT_ACTION_REQUESTED outgoing=true CONTACT_STATE_OUTGOING" {
		t.Fatalf("alice's inbox: %v", got)
	}

	b1 := discardEvents(c.dial(1, bob, "b1"))
	b2 := discardEvents(c.dial(0, bob, "b2"))
	for _, dev := range []string{"b1", "b2"} {
		cl := b1
		if dev == "b2" {
			cl = b2
		}
		waitExists(t, ctx, cl, cl.InboxID)
		got := catchUp(t, ctx, cl, cl.InboxID, 0, 2)
		if got[0].GetConversationCreated().GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_INBOX ||
			item(got[1]) != alice+" CONTACT_ACTION_REQUESTED outgoing=false CONTACT_STATE_INCOMING" {
			t.Fatalf("%s found %v", dev, got)
		}
	}
	if st, err := b1.RespondContact(ctx, alice, true); err != nil || st != chatv1.ContactState_CONTACT_STATE_CONTACT {
		t.Fatalf("accept: %v, %v", st, err)
	}
	if got := catchUp(t, ctx, a, a.InboxID, 2, 3); item(got[0]) != bob+" CONTACT_ACTION_ACCEPTED outgoing=false CONTACT_STATE_CONTACT" {
		t.Fatalf("alice told %v", got)
	}
	if got := catchUp(t, ctx, b2, b2.InboxID, 2, 3); item(got[0]) != alice+" CONTACT_ACTION_ACCEPTED outgoing=true CONTACT_STATE_CONTACT" {
		t.Fatalf("bob's other device told %v", got)
	}
	dm := ingest.DirectID(alice, bob)
	waitExists(t, ctx, a, dm)
	if got := catchUp(t, ctx, a, dm, 0, 1); got[0].GetConversationCreated().GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_DIRECT {
		t.Fatalf("the direct conversation opened with %v", got)
	}
	for who, cl := range map[string]interface {
		Contacts(context.Context) ([]*chatv1.Contact, error)
	}{alice: a, bob: b2} {
		eventually(t, who+"'s contacts", func() error {
			l, err := cl.Contacts(ctx)
			if err != nil {
				return err
			}
			if len(l) != 1 || l[0].GetState() != chatv1.ContactState_CONTACT_STATE_CONTACT {
				return fmt.Errorf("%v", l)
			}
			return nil
		})
	}
}

// TestInvitationsWithConsent (real stack, two edges): in a group with
// consent one invitee declines and one accepts; only the one who accepted
// is a member, and gets what is posted after.
func TestInvitationsWithConsent(t *testing.T) {
	s := requireStack(t)
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := fmt.Sprint(time.Now().UnixNano())
	alice, bob, carol := "alice-"+run, "bob-"+run, "carol-"+run
	a := discardEvents(c.dial(0, alice, "a1"))
	b := discardEvents(c.dial(1, bob, "b1"))
	cc := discardEvents(c.dial(0, carol, "c1"))
	acc, err := a.CreateConsentGroup(ctx, "club")
	if err != nil {
		t.Fatal(err)
	}
	g := acc.GetConversationId()
	for _, u := range []string{bob, carol} {
		if _, err := a.AddMember(ctx, g, u); err != nil {
			t.Fatal(err)
		}
	}
	for _, cl := range []*sdk.Client{b, cc} {
		waitExists(t, ctx, cl, cl.InboxID)
		got := catchUp(t, ctx, cl, cl.InboxID, 0, 2)
		if u := got[1].GetInvitationUpdated(); u.GetConversationId() != g || u.GetInviterId() != alice || u.GetAction() != chatv1.InvitationAction_INVITATION_ACTION_INVITED {
			t.Fatalf("%s's inbox: %v", cl.UserID, got)
		}
	}
	if st, err := cc.RespondInvitation(ctx, g, false); err != nil || st.GetJoined() {
		t.Fatalf("decline: %v, %v", st, err)
	}
	st, err := b.RespondInvitation(ctx, g, true)
	if err != nil || !st.GetJoined() || st.GetSeq() != 4 {
		t.Fatalf("accept: %v, %v", st, err)
	}
	if _, err := a.Send(ctx, g, "welcome"); err != nil {
		t.Fatal(err)
	}
	// Persistence may not have stored bob's joining yet; until it has, it
	// answers him as it answers any non-member.
	waitExists(t, ctx, b, g)
	got := catchUp(t, ctx, b, g, 3, 5)
	if got[0].GetMemberJoined().GetUserId() != bob || got[1].GetMessagePosted().GetText() != "welcome" {
		t.Fatalf("bob reads %v", got)
	}
	if got := catchUp(t, ctx, cc, cc.InboxID, 2, 3); got[0].GetInvitationUpdated().GetAction() != chatv1.InvitationAction_INVITATION_ACTION_DECLINED {
		t.Fatalf("carol's inbox after declining: %v", got)
	}
	if _, err := cc.History(ctx, &clientv1.GetHistory{ConversationId: g}); err == nil {
		t.Fatal("carol declined, yet reads the group")
	}
}
