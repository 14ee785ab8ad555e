package platform_test

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

// contactItem is what an inbox event says, for comparing.
func contactItem(ev *chatv1.Event) string {
	u := ev.GetContactUpdated()
	if u == nil {
		return fmt.Sprintf("seq %d: not a contact item: %v", ev.GetSeq(), ev)
	}
	return fmt.Sprintf("seq %d: %s %s outgoing=%v %s", ev.GetSeq(), u.GetUserId(), u.GetAction(), u.GetOutgoing(), u.GetState())
}

// waitContacts polls c's contact list (read from history, a moment
// behind the inbox) until it reads want.
func waitContacts(t *testing.T, c *sdk.Client, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := c.Contacts(context.Background())
		got := ""
		for _, ct := range list {
			got += fmt.Sprintf("%s:%s ", ct.GetUserId(), ct.GetState())
		}
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's contacts %q (%v), want %q", c.UserID, got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestContactRequestToOfflineUser: a request sent to a user with no
// device connected waits in their inbox; both their devices get it when
// they connect (one from the conversation list and history, one by
// resuming the inbox from its start), one accepts, the asker and the other
// device are told live, and the pair's direct conversation is open.
func TestContactRequestToOfflineUser(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice := e.dial("alice", "a1", false)
	if alice.InboxID == "" {
		t.Fatal("Authenticated carries no inbox id")
	}
	st, err := alice.RequestContact(ctx, "bob")
	if err != nil || st != chatv1.ContactState_CONTACT_STATE_OUTGOING {
		t.Fatalf("request: %v, %v", st, err)
	}
	// Retried: the same answer, nothing new in any inbox (checked below
	// by the seqs).
	if st, err := alice.RequestContact(ctx, "bob"); err != nil || st != chatv1.ContactState_CONTACT_STATE_OUTGOING {
		t.Fatalf("request again: %v, %v", st, err)
	}
	// alice's own inbox: created (seq 1), then her request.
	got := alice.upTo(t, alice.InboxID, 2)
	if got[0].GetConversationCreated().GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_INBOX ||
		contactItem(got[1]) != "seq 2: bob CONTACT_ACTION_REQUESTED outgoing=true CONTACT_STATE_OUTGOING" {
		t.Fatalf("alice's inbox: %v", got)
	}

	// bob's first device lists his conversations and pages the inbox.
	b1 := e.dial("bob", "b1", false)
	var inbox *chatv1.Conversation
	deadline := time.Now().Add(10 * time.Second)
	for inbox == nil {
		list, err := b1.Conversations(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			if c.GetConversationId() == b1.InboxID && c.GetLastSeq() == 2 {
				inbox = c
			}
		}
		if inbox == nil && time.Now().After(deadline) {
			t.Fatalf("bob's list has no inbox at seq 2: %v", list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if inbox.GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_INBOX || len(inbox.GetMemberIds()) != 1 {
		t.Fatalf("bob's inbox listed as %v", inbox)
	}
	page, err := b1.History(ctx, &clientv1.GetHistory{ConversationId: b1.InboxID})
	if err != nil || len(page.GetEvents()) != 2 || contactItem(page.GetEvents()[1]) != "seq 2: alice CONTACT_ACTION_REQUESTED outgoing=false CONTACT_STATE_INCOMING" {
		t.Fatalf("bob's inbox history: %v, %v", page, err)
	}
	waitContacts(t, b1.Client, "alice:CONTACT_STATE_INCOMING ")

	// bob's second device (JSON) resumes the inbox from its start.
	tok, _ := e.minter.Mint("bob", time.Hour)
	c2, err := sdk.Dial(ctx, sdk.Options{URL: e.url, Token: tok, DeviceID: "b2", JSON: true,
		Resume: []*clientv1.Cursor{{ConversationId: b1.InboxID, LastSeq: 0}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	b2 := &device{Client: c2, last: map[string]uint64{}}
	if got := b2.upTo(t, b1.InboxID, 2); contactItem(got[1]) != "seq 2: alice CONTACT_ACTION_REQUESTED outgoing=false CONTACT_STATE_INCOMING" {
		t.Fatalf("bob's second device resumed %v", got)
	}

	st, err = b1.RespondContact(ctx, "alice", true)
	if err != nil || st != chatv1.ContactState_CONTACT_STATE_CONTACT {
		t.Fatalf("accept: %v, %v", st, err)
	}
	if got := alice.upTo(t, alice.InboxID, 3); contactItem(got[0]) != "seq 3: bob CONTACT_ACTION_ACCEPTED outgoing=false CONTACT_STATE_CONTACT" {
		t.Fatalf("alice told %v", got)
	}
	if got := b2.upTo(t, b1.InboxID, 3); contactItem(got[0]) != "seq 3: alice CONTACT_ACTION_ACCEPTED outgoing=true CONTACT_STATE_CONTACT" {
		t.Fatalf("bob's other device told %v", got)
	}
	// Accepting opened the direct conversation: alice posts, bob reads.
	dm := ingest.DirectID("alice", "bob")
	waitHistory(t, alice.Client, dm, 1)
	if page, err := alice.History(ctx, &clientv1.GetHistory{ConversationId: dm}); err != nil ||
		page.GetEvents()[0].GetConversationCreated().GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_DIRECT {
		t.Fatalf("direct conversation opened with %v, %v", page, err)
	}
	if _, err := alice.Send(ctx, dm, "hi bob"); err != nil {
		t.Fatal(err)
	}
	if got := b2.upTo(t, dm, 2); got[len(got)-1].GetMessagePosted().GetText() != "hi bob" {
		t.Fatalf("bob got %v", got)
	}
	waitContacts(t, alice.Client, "bob:CONTACT_STATE_CONTACT ")
	waitContacts(t, b1.Client, "alice:CONTACT_STATE_CONTACT ")
}

// TestContactDeclineAndBlocks: a declined request stays pending to its
// asker, who is told nothing; a blocked user's request is refused; and
// nobody writes to an inbox but Parley.
func TestContactDeclineAndBlocks(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	carol, bob, dave := e.dial("carol", "c1", false), e.dial("bob", "b1", true), e.dial("dave", "d1", false)
	if _, err := carol.RequestContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	bob.upTo(t, bob.InboxID, 2)
	if st, err := bob.RespondContact(ctx, "carol", false); err != nil || st != chatv1.ContactState_CONTACT_STATE_UNSPECIFIED {
		t.Fatalf("decline: %v, %v", st, err)
	}
	if got := bob.upTo(t, bob.InboxID, 3); contactItem(got[0]) != "seq 3: carol CONTACT_ACTION_DECLINED outgoing=true CONTACT_STATE_UNSPECIFIED" {
		t.Fatalf("bob's devices told %v", got)
	}
	waitContacts(t, bob.Client, "")
	// carol still sees her request waiting, and nothing came to her inbox
	// after it: her next item is what she does next.
	waitContacts(t, carol.Client, "bob:CONTACT_STATE_OUTGOING ")
	if _, err := carol.CancelContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if got := carol.upTo(t, carol.InboxID, 3); contactItem(got[2]) != "seq 3: bob CONTACT_ACTION_CANCELLED outgoing=true CONTACT_STATE_UNSPECIFIED" {
		t.Fatalf("carol's inbox %v", got)
	}
	if _, err := bob.RespondContact(ctx, "carol", true); err == nil {
		t.Fatal("accepted a cancelled request")
	} else {
		wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
	}

	if err := bob.Block(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	_, err := dave.RequestContact(ctx, "bob")
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_BLOCKED)
	_, err = bob.Send(ctx, bob.InboxID, "to myself")
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED)
	_, err = carol.RequestContact(ctx, "carol")
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	// Nothing reached bob's inbox from dave or anyone since: its head,
	// once stored, is still the decline.
	waitHistory(t, bob.Client, bob.InboxID, 3)
}

// invitationItem is what an inbox invitation item says, for comparing.
func invitationItem(ev *chatv1.Event) string {
	u := ev.GetInvitationUpdated()
	if u == nil {
		return fmt.Sprintf("seq %d: not an invitation item: %v", ev.GetSeq(), ev)
	}
	return fmt.Sprintf("seq %d: %s %q by %s %s", ev.GetSeq(), u.GetKind(), u.GetTitle(), u.GetInviterId(), u.GetAction())
}

// TestInvitationsWithConsent: in a group with consent, adding a user
// invites them through their inbox; one invitee declines (the members
// are not told, nothing of the group reaches her), one accepts and
// joins, getting everything from his joining on; a user who blocks the
// inviter cannot be invited.
func TestInvitationsWithConsent(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice, bob, carol, dave := e.dial("alice", "a1", false), e.dial("bob", "b1", true), e.dial("carol", "c1", false), e.dial("dave", "d1", false)
	acc, err := alice.CreateConsentGroup(ctx, "book club")
	if err != nil {
		t.Fatal(err)
	}
	g := acc.GetConversationId()
	if _, err := alice.AddMember(ctx, g, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.AddMember(ctx, g, "carol"); err != nil {
		t.Fatal(err)
	}
	got := alice.upTo(t, g, 3)
	if got[1].GetMemberInvited().GetUserId() != "bob" || got[2].GetMemberInvited().GetUserId() != "carol" {
		t.Fatalf("alice sees %v", got)
	}
	if got := bob.upTo(t, bob.InboxID, 2); invitationItem(got[1]) != `seq 2: CONVERSATION_KIND_GROUP "book club" by alice INVITATION_ACTION_INVITED` {
		t.Fatalf("bob's inbox: %v", got)
	}
	if got := carol.upTo(t, carol.InboxID, 2); invitationItem(got[1]) != `seq 2: CONVERSATION_KIND_GROUP "book club" by alice INVITATION_ACTION_INVITED` {
		t.Fatalf("carol's inbox: %v", got)
	}
	// Until they accept they are not in: no history, no posting.
	_, err = bob.Send(ctx, g, "hello?")
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)

	if st, err := carol.RespondInvitation(ctx, g, false); err != nil || st.GetJoined() {
		t.Fatalf("decline: %v, %v", st, err)
	}
	if got := carol.upTo(t, carol.InboxID, 3); invitationItem(got[0]) != `seq 3: CONVERSATION_KIND_GROUP "book club" by alice INVITATION_ACTION_DECLINED` {
		t.Fatalf("carol's inbox after declining: %v", got)
	}
	st, err := bob.RespondInvitation(ctx, g, true)
	if err != nil || !st.GetJoined() || st.GetSeq() != 4 {
		t.Fatalf("accept: %v, %v", st, err)
	}
	if got := alice.upTo(t, g, 4); got[0].GetMemberJoined().GetUserId() != "bob" {
		t.Fatalf("alice sees %v (and no decline before it)", got)
	}
	if _, err := alice.Send(ctx, g, "welcome"); err != nil {
		t.Fatal(err)
	}
	if got := bob.upTo(t, g, 5); got[len(got)-1].GetMessagePosted().GetText() != "welcome" {
		t.Fatalf("bob got %v", got)
	}
	_, err = carol.History(ctx, &clientv1.GetHistory{ConversationId: g})
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)
	_, err = carol.RespondInvitation(ctx, g, true)
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_NOT_FOUND)

	// dave blocks alice: she cannot invite him.
	if err := dave.Block(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = alice.AddMember(ctx, g, "dave")
		if err != nil || time.Now().After(deadline) {
			break
		}
		// The edge reads blocks from history, a moment behind: an
		// invitation that slipped in before is answered as a duplicate.
		time.Sleep(20 * time.Millisecond)
	}
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_BLOCKED)
}

// TestContactsOnly: bob takes direct conversations from contacts only;
// carol, a stranger, cannot open one with him (and may still ask to be
// his contact), alice, his contact, can; his other device learns the
// setting from his inbox; turned off, carol can.
func TestContactsOnly(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	alice, bob, carol := e.dial("alice", "a1", false), e.dial("bob", "b1", false), e.dial("carol", "c1", true)
	if _, err := alice.RequestContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.RespondContact(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	laptop := e.dial("bob", "b2", false)
	if s, err := bob.SetContactsOnly(ctx, true); err != nil || !s.GetContactsOnly() {
		t.Fatalf("set: %v, %v", s, err)
	}
	// The inbox: created, alice's request, the answer, the setting.
	if got := laptop.upTo(t, laptop.InboxID, 4); !got[len(got)-1].GetSettingsChanged().GetContactsOnly() {
		t.Fatalf("bob's other device got %v", got)
	}
	// The edge reads the setting from history, a moment behind.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := laptop.Settings(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.GetContactsOnly() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the setting never read back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err := carol.OpenDirect(ctx, "bob")
	wantCode(t, err, chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED)
	if _, err := carol.RequestContact(ctx, "bob"); err != nil {
		t.Fatalf("a stranger's contact request: %v", err)
	}
	if _, err := alice.OpenDirect(ctx, "bob"); err != nil {
		t.Fatalf("a contact opens the direct conversation: %v", err)
	}
	if s, err := bob.SetContactsOnly(ctx, false); err != nil || s.GetContactsOnly() {
		t.Fatalf("unset: %v, %v", s, err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err = carol.OpenDirect(ctx, "bob")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("carol still refused once the setting is off: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
