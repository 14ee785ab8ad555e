package historytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Inbox returns the records of owner's inbox as the sequencer logs them:
// its creation at seq 1, then one ContactUpdated item per state, naming
// peers[i] with states[i], at seqs 2, 3, ...
func Inbox(owner string, peers []string, states []chatv1.ContactState) []*logv1.EventRecord {
	conv := "inbox-" + owner
	recs := []*logv1.EventRecord{{Event: &chatv1.Event{ConversationId: conv, Seq: 1, EventId: conv + "-1", SenderId: owner, Time: timestamppb.New(base),
		Body: &chatv1.Event_ConversationCreated{ConversationCreated: &chatv1.ConversationCreated{
			Kind: chatv1.ConversationKind_CONVERSATION_KIND_INBOX, MemberIds: []string{owner}}}}, RecipientIds: []string{owner}}}
	for i, st := range states {
		seq := uint64(i + 2)
		recs = append(recs, &logv1.EventRecord{Event: &chatv1.Event{ConversationId: conv, Seq: seq, EventId: fmt.Sprintf("%s-%d", conv, seq),
			Time: timestamppb.New(base.Add(time.Duration(seq) * time.Second)), ClientMsgId: fmt.Sprintf("parley:%s-%d", conv, seq),
			Body: &chatv1.Event_ContactUpdated{ContactUpdated: &chatv1.ContactUpdated{UserId: peers[i], OwnerId: owner, State: st,
				Action: chatv1.ContactAction_CONTACT_ACTION_REQUESTED}}}, RecipientIds: []string{owner}})
	}
	return recs
}

// wantContacts checks owner's list as "user:state:seq,...".
func wantContacts(t *testing.T, s history.Store, owner, want string) {
	t.Helper()
	got, err := s.Contacts(context.Background(), owner)
	if err != nil {
		t.Fatalf("contacts of %s: %v", owner, err)
	}
	if got == nil {
		t.Fatalf("contacts of %s: nil, want an empty list at least", owner)
	}
	var parts []string
	for _, c := range got {
		parts = append(parts, fmt.Sprintf("%s:%d:%d", c.GetUserId(), c.GetState(), c.GetInboxSeq()))
		if want := base.Add(time.Duration(c.GetInboxSeq()) * time.Second); !c.GetSince().AsTime().Equal(want) {
			t.Fatalf("contact %s of %s since %v, want %v (its item's time)", c.GetUserId(), owner, c.GetSince().AsTime(), want)
		}
	}
	if g := strings.Join(parts, ","); g != want {
		t.Fatalf("contacts of %s:\n got  %q\n want %q", owner, g, want)
	}
}

// runContacts is the part of the suite about contact lists: folded from
// the user's inbox items, the highest seq per other user wins whatever
// order items are applied in and however often; none is left out; the
// pair's own record changes nothing; a user sees only their own list.
func runContacts(t *testing.T, open func(*testing.T) history.Store) {
	const (
		none     = chatv1.ContactState_CONTACT_STATE_UNSPECIFIED
		outgoing = chatv1.ContactState_CONTACT_STATE_OUTGOING
		incoming = chatv1.ContactState_CONTACT_STATE_INCOMING
		contact  = chatv1.ContactState_CONTACT_STATE_CONTACT
	)
	t.Run("FoldedFromTheInbox", func(t *testing.T) {
		s := open(t)
		wantContacts(t, s, "alice", "")
		recs := Inbox("alice", []string{"bob", "carol", "bob", "dave", "zed", "Amy", "dave"},
			[]chatv1.ContactState{outgoing, incoming, contact, incoming, outgoing, contact, none})
		apply(t, s, recs[:3]...)
		wantContacts(t, s, "alice", "bob:1:2,carol:2:3")
		apply(t, s, recs[3:]...)
		// Byte order of ids; dave's request ended.
		wantContacts(t, s, "alice", "Amy:3:7,bob:3:4,carol:2:3,zed:1:6")
		// The inbox is a conversation like any: listed, paged.
		list, err := s.Conversations(context.Background(), "alice", history.ListQuery{})
		if err != nil || len(list) != 1 || list[0].GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_INBOX || list[0].GetLastSeq() != 8 {
			t.Fatalf("alice's conversations: %v, %v", list, err)
		}
	})
	t.Run("ReplayAndOrderChangeNothing", func(t *testing.T) {
		s := open(t)
		recs := Inbox("alice", []string{"bob", "bob", "carol", "bob", "carol"}, []chatv1.ContactState{outgoing, none, incoming, outgoing, contact})
		const want = "bob:1:5,carol:3:6"
		apply(t, s, recs...)
		wantContacts(t, s, "alice", want)
		apply(t, s, recs...)
		wantContacts(t, s, "alice", want)
		for _, r := range recs {
			apply(t, s, r)
		}
		wantContacts(t, s, "alice", want)
		rev := slices.Clone(recs)
		slices.Reverse(rev)
		fresh := open(t)
		for _, r := range rev {
			apply(t, fresh, r)
		}
		wantContacts(t, fresh, "alice", want)
		// Reversed within one Apply, too.
		fresh = open(t)
		apply(t, fresh, rev...)
		wantContacts(t, fresh, "alice", want)
	})
	t.Run("OthersListsInvisible", func(t *testing.T) {
		s := open(t)
		apply(t, s, Inbox("alice", []string{"bob"}, []chatv1.ContactState{outgoing})...)
		apply(t, s, Inbox("bob", []string{"alice"}, []chatv1.ContactState{incoming})...)
		wantContacts(t, s, "alice", "bob:1:2")
		wantContacts(t, s, "bob", "alice:2:2")
		wantContacts(t, s, "ali", "")
		wantContacts(t, s, "alice2", "")
	})
	t.Run("PairRecordStoresNothing", func(t *testing.T) {
		s := open(t)
		apply(t, s, &logv1.EventRecord{Contact: &logv1.ContactChange{ConversationId: "d-alice-bob", ActorId: "alice", OtherId: "bob",
			Action: chatv1.ContactAction_CONTACT_ACTION_REQUESTED, Time: timestamppb.New(base)}})
		wantContacts(t, s, "alice", "")
		wantContacts(t, s, "bob", "")
	})
	t.Run("ConsentAndInvitations", func(t *testing.T) {
		// A conversation with consent shows it in its summary; an
		// invitation is history, not membership; a declined one stores
		// nothing; accepting is a membership like any join.
		s := open(t)
		created := Created("g", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "team", "alice")
		created.GetEvent().GetConversationCreated().Consent = true
		invited := &logv1.EventRecord{Event: &chatv1.Event{ConversationId: "g", Seq: 2, EventId: "g-2", SenderId: "alice", Time: timestamppb.New(base),
			Body: &chatv1.Event_MemberInvited{MemberInvited: &chatv1.MemberInvited{UserId: "bob"}}}, RecipientIds: []string{"alice"}}
		declined := &logv1.EventRecord{Declined: &logv1.InvitationDeclined{ConversationId: "g", UserId: "bob", Time: timestamppb.New(base)}}
		apply(t, s, created, invited, declined)
		sum, err := s.Conversation(context.Background(), "g")
		if err != nil || !sum.GetConsent() || fmt.Sprint(sum.GetMemberIds()) != "[alice]" || sum.GetLastSeq() != 2 {
			t.Fatalf("summary after an invitation: %v, %v", sum, err)
		}
		if l, err := s.Conversations(context.Background(), "bob", history.ListQuery{}); err != nil || len(l) != 0 {
			t.Fatalf("the invitee lists %v, %v", l, err)
		}
		joined := &logv1.EventRecord{Event: &chatv1.Event{ConversationId: "g", Seq: 3, EventId: "g-3", SenderId: "bob", Time: timestamppb.New(base),
			Body: &chatv1.Event_MemberJoined{MemberJoined: &chatv1.MemberJoined{UserId: "bob"}}}, RecipientIds: []string{"alice", "bob"}}
		apply(t, s, joined)
		if l, err := s.Conversations(context.Background(), "bob", history.ListQuery{}); err != nil || len(l) != 1 || !l[0].GetConsent() {
			t.Fatalf("bob lists %v, %v after accepting", l, err)
		}
		plain := open(t)
		apply(t, plain, Created("h", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "t", "alice"))
		if sum, err := plain.Conversation(context.Background(), "h"); err != nil || sum.GetConsent() {
			t.Fatalf("a group without consent: %v, %v", sum, err)
		}
	})
	t.Run("ConversationForAnAudienceReader", func(t *testing.T) {
		// A user who is no member (an audience's reader) has a read
		// position, an unread count and flags in it all the same.
		s := open(t)
		apply(t, s, Created("aud", chatv1.ConversationKind_CONVERSATION_KIND_AUDIENCE, "region=eu", "aud:region=eu"),
			Posted("aud", 2, "system", "one"), Posted("aud", 3, "system", "two"), Posted("aud", 4, "system", "three"))
		c, err := s.ConversationFor(context.Background(), "aud", "alice")
		if err != nil || c.GetReadSeq() != 0 || c.GetUnreadCount() != 3 || c.GetMuted() || c.GetKind() != chatv1.ConversationKind_CONVERSATION_KIND_AUDIENCE {
			t.Fatalf("alice's view before reading: %v, %v", c, err)
		}
		apply(t, s, Receipt("aud", "alice", "a1", 3, 3), Flags("aud", "alice", 1, true, false))
		c, err = s.ConversationFor(context.Background(), "aud", "alice")
		if err != nil || c.GetReadSeq() != 3 || c.GetUnreadCount() != 1 || !c.GetMuted() || c.GetLastSeq() != 4 {
			t.Fatalf("alice's view after reading to 3 and muting: %v, %v", c, err)
		}
		if l, err := s.Conversations(context.Background(), "alice", history.ListQuery{}); err != nil || len(l) != 0 {
			t.Fatalf("alice lists %v, %v: she is no member", l, err)
		}
		if _, err := s.ConversationFor(context.Background(), "nowhere", "alice"); !errors.Is(err, history.ErrNotFound) {
			t.Fatalf("a conversation that does not exist: %v", err)
		}
	})
	t.Run("SettingsInTheInboxSummary", func(t *testing.T) {
		// The owner's settings are the latest SettingsChanged of their
		// inbox, also when the log is applied again (a replay).
		setting := func(seq uint64, on bool) *logv1.EventRecord {
			return &logv1.EventRecord{Event: &chatv1.Event{ConversationId: "inbox-alice", Seq: seq, EventId: fmt.Sprint("s", seq), SenderId: "alice",
				Time: timestamppb.New(base), Body: &chatv1.Event_SettingsChanged{SettingsChanged: &chatv1.SettingsChanged{ContactsOnly: on}}},
				RecipientIds: []string{"alice"}}
		}
		created := Inbox("alice", nil, nil)[0]
		for name, order := range map[string][]*logv1.EventRecord{
			"in order": {created, setting(2, true), setting(3, false), setting(4, true)},
			"replayed": {created, setting(2, true), setting(3, false), setting(4, true), created, setting(2, true), setting(3, false), setting(4, true), setting(3, false)},
		} {
			s := open(t)
			for _, r := range order {
				apply(t, s, r)
			}
			sum, err := s.Conversation(context.Background(), "inbox-alice")
			if err != nil || !sum.GetContactsOnly() || sum.GetLastSeq() != 4 {
				t.Fatalf("%s: %v, %v", name, sum, err)
			}
		}
		s := open(t)
		apply(t, s, created, setting(2, true), setting(3, false))
		if sum, err := s.Conversation(context.Background(), "inbox-alice"); err != nil || sum.GetContactsOnly() {
			t.Fatalf("turned off: %v, %v", sum, err)
		}
	})
	t.Run("RequestsCountAsUnread", func(t *testing.T) {
		// Items asking the owner for an answer count as unread; their own
		// request and answers do not.
		s := open(t)
		recs := Inbox("alice", []string{"bob", "carol", "dave"}, []chatv1.ContactState{incoming, outgoing, contact})
		recs[2].GetEvent().GetContactUpdated().Outgoing = true
		recs[3].GetEvent().GetContactUpdated().Action = chatv1.ContactAction_CONTACT_ACTION_ACCEPTED
		apply(t, s, recs...)
		l, err := s.Conversations(context.Background(), "alice", history.ListQuery{})
		if err != nil || len(l) != 1 || l[0].GetUnreadCount() != 1 {
			t.Fatalf("alice's inbox listed %v, %v; want 1 unread (bob's request)", l, err)
		}
	})
	t.Run("ItemWithoutOwnerRefused", func(t *testing.T) {
		s := open(t)
		recs := Inbox("alice", []string{"bob"}, []chatv1.ContactState{outgoing})
		recs[1].GetEvent().GetContactUpdated().OwnerId = ""
		if err := s.Apply(context.Background(), recs); err == nil {
			t.Fatal("an inbox item without its owner was applied")
		}
	})
}
