package historytest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Flags returns a flags record of user in conv at version, as the
// sequencer logs it.
func Flags(conv, user string, version uint64, muted, pinned bool) *logv1.EventRecord {
	return &logv1.EventRecord{Flags: &chatv1.ConversationFlags{
		ConversationId: conv, UserId: user, Muted: muted, Pinned: pinned, Version: version,
		Time: timestamppb.New(base.Add(time.Duration(version) * time.Minute)),
	}, RecipientIds: []string{user}}
}

// flagged renders a user's list as "conv[ muted][ pinned]", in list order.
func flagged(t *testing.T, s history.Store, user string, q history.ListQuery) string {
	t.Helper()
	l, err := s.Conversations(context.Background(), user, q)
	if err != nil {
		t.Fatalf("conversations of %s: %v", user, err)
	}
	out := make([]string, len(l))
	for i, c := range l {
		out[i] = c.GetConversationId()
		if c.GetMuted() {
			out[i] += " muted"
		}
		if c.GetPinned() {
			out[i] += " pinned"
		}
	}
	return strings.Join(out, ", ")
}

func wantFlagged(t *testing.T, s history.Store, user string, q history.ListQuery, want string) {
	t.Helper()
	if got := flagged(t, s, user, q); got != want {
		t.Fatalf("%s's list (%+v):\n got  %s\n want %s", user, q, got, want)
	}
}

// runFlags is the part of the suite about each user's own muted and
// pinned flags: shown in that user's list only, pinned first, the highest
// version kept in any order, and a change listed as one for its user only.
func runFlags(t *testing.T, open func(*testing.T) history.Store) {
	all := history.ListQuery{}
	// c1 is the most recent, then c2, then c3.
	three := func(t *testing.T, s history.Store) {
		t.Helper()
		group(t, s, "c3", 2, "alice", "bob")
		group(t, s, "c2", 3, "alice", "bob")
		group(t, s, "c1", 4, "alice", "bob")
		wantFlagged(t, s, "alice", all, "c1, c2, c3")
	}
	t.Run("FlagsAreTheirUsersOwn", func(t *testing.T) {
		s := open(t)
		three(t, s)
		apply(t, s, Flags("c2", "alice", 1, true, false), Flags("c3", "alice", 1, false, true))
		// Pinned first, then by activity; the flags show in alice's list
		// only.
		wantFlagged(t, s, "alice", all, "c3 pinned, c1, c2 muted")
		wantFlagged(t, s, "bob", all, "c1, c2, c3")
		apply(t, s, Flags("c1", "bob", 1, false, true), Flags("c2", "bob", 1, false, true))
		wantFlagged(t, s, "bob", all, "c1 pinned, c2 pinned, c3")
		wantFlagged(t, s, "alice", all, "c3 pinned, c1, c2 muted")
		// The limit applies to the list in that order.
		wantFlagged(t, s, "alice", history.ListQuery{Limit: 1}, "c3 pinned")
		// Flags change no summary: nobody's unread counts or seqs move.
		wantListed(t, s, "bob", time.Time{}, "c1 r0 u3, c2 r0 u2, c3 r0 u1")
		if sum, err := s.Conversation(context.Background(), "c2"); err != nil || sum.GetMuted() || sum.GetPinned() {
			t.Fatalf("summary of c2 carries a user's flags: %v, %v", sum, err)
		}
	})
	t.Run("HighestVersionWins", func(t *testing.T) {
		s := open(t)
		three(t, s)
		log := []*logv1.EventRecord{
			Flags("c3", "alice", 1, true, false),
			Flags("c3", "alice", 2, true, true),
			Flags("c3", "alice", 3, false, true),
			Flags("c2", "alice", 1, true, false),
			Flags("c2", "alice", 2, false, false),
		}
		const want = "c3 pinned, c1, c2"
		apply(t, s, log...)
		wantFlagged(t, s, "alice", all, want)
		for _, r := range log {
			apply(t, s, r)
		}
		wantFlagged(t, s, "alice", all, want)
		rev := slices.Clone(log)
		slices.Reverse(rev)
		apply(t, s, rev...)
		wantFlagged(t, s, "alice", all, want)
		for _, r := range rev {
			apply(t, s, r)
		}
		wantFlagged(t, s, "alice", all, want)
	})
	t.Run("FlagsBeforeTheConversation", func(t *testing.T) {
		// A store catching up may apply a flags record of a conversation
		// it has not stored yet (another partition of its work): kept
		// all the same, shown once the conversation is.
		s := open(t)
		apply(t, s, Flags("c9", "alice", 1, true, true))
		wantFlagged(t, s, "alice", all, "")
		group(t, s, "c9", 2, "alice", "bob")
		group(t, s, "c8", 3, "alice", "bob")
		wantFlagged(t, s, "alice", all, "c9 muted pinned, c8")
	})
	t.Run("FlagsChangeTheListOfTheirUserOnly", func(t *testing.T) {
		s := open(t)
		three(t, s)
		t0 := later()
		wantFlagged(t, s, "alice", history.ListQuery{ChangedSince: t0}, "")
		apply(t, s, Flags("c2", "alice", 1, true, false))
		wantFlagged(t, s, "alice", history.ListQuery{ChangedSince: t0}, "c2 muted")
		wantFlagged(t, s, "bob", history.ListQuery{ChangedSince: t0}, "")
		// An older version applied again changes nothing, so it is no
		// change; the same version again may count as one (a replay may
		// show a conversation changed again, never hide a change).
		apply(t, s, Flags("c2", "alice", 2, false, true))
		t1 := later()
		apply(t, s, Flags("c2", "alice", 1, true, false))
		wantFlagged(t, s, "alice", history.ListQuery{ChangedSince: t1}, "")
		wantFlagged(t, s, "alice", all, "c2 pinned, c1, c3")
	})
	t.Run("LeftUsersListNothing", func(t *testing.T) {
		s := open(t)
		three(t, s)
		apply(t, s, Flags("c2", "bob", 1, false, true), At("c2", 4, "bob", &chatv1.MemberLeft{UserId: "bob"}))
		wantFlagged(t, s, "bob", all, "c1, c3")
		// Back again, the flags are as they were left.
		apply(t, s, Added("c2", 5, "alice", "bob"))
		wantFlagged(t, s, "bob", all, "c2 pinned, c1, c3")
	})
}
