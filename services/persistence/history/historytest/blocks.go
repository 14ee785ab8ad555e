package historytest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/services/persistence/history"
	"google.golang.org/protobuf/types/known/timestamppb"

	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Block returns a block (blocked) or unblock record of blocked by blocker
// in conv, as the sequencer logs it: its time grows with step, as the
// sequencer's stamps of one pair do.
func Block(conv, blocker, blocked string, block bool, step int) *logv1.EventRecord {
	return &logv1.EventRecord{Block: &logv1.BlockChange{
		ConversationId: conv, BlockerId: blocker, BlockedId: blocked, Blocked: block,
		Time: timestamppb.New(base.Add(time.Duration(step) * time.Microsecond)),
	}, CommandId: "block-" + blocker + "-" + blocked}
}

func wantBlocks(t *testing.T, s history.Store, blocker, want string) {
	t.Helper()
	got, err := s.Blocks(context.Background(), blocker)
	if err != nil {
		t.Fatalf("blocks of %s: %v", blocker, err)
	}
	if got == nil {
		t.Fatalf("blocks of %s: nil, want an empty list at least", blocker)
	}
	if g := strings.Join(got, ","); g != want {
		t.Fatalf("blocks of %s:\n got  %q\n want %q", blocker, g, want)
	}
}

// runBlocks is the part of the suite about whom each user blocks: the
// latest record of a pair wins, whatever order records are applied in and
// however often, and a user's list holds only their own blocks.
func runBlocks(t *testing.T, open func(*testing.T) history.Store) {
	// Users are per test: each of conv's pairs has its own direct
	// conversation, named as the sequencer would not, which does not
	// matter to the view.
	pair := func(a, b string) string { return "d-" + a + "-" + b }
	t.Run("BlockUnblockReblock", func(t *testing.T) {
		s := open(t)
		wantBlocks(t, s, "alice", "")
		apply(t, s, Block(pair("alice", "bob"), "alice", "bob", true, 1))
		wantBlocks(t, s, "alice", "bob")
		apply(t, s, Block(pair("alice", "carol"), "alice", "carol", true, 1), Block(pair("alice", "bob"), "alice", "bob", false, 2))
		wantBlocks(t, s, "alice", "carol")
		apply(t, s, Block(pair("alice", "bob"), "alice", "bob", true, 3))
		wantBlocks(t, s, "alice", "bob,carol")
		apply(t, s, Block(pair("alice", "bob"), "alice", "bob", false, 4), Block(pair("alice", "bob"), "alice", "bob", true, 5))
		wantBlocks(t, s, "alice", "bob,carol")
	})
	t.Run("ListedInIDOrder", func(t *testing.T) {
		s := open(t)
		for i, u := range []string{"zed", "Bob", "amy", "bob", "émile"} {
			apply(t, s, Block(pair("x", u), "x", u, true, i+1))
		}
		wantBlocks(t, s, "x", "Bob,amy,bob,zed,émile")
	})
	t.Run("ReplayChangesNothing", func(t *testing.T) {
		s := open(t)
		recs := []*logv1.EventRecord{
			Block(pair("alice", "bob"), "alice", "bob", true, 1),
			Block(pair("alice", "carol"), "alice", "carol", true, 1),
			Block(pair("alice", "bob"), "alice", "bob", false, 2),
			Block(pair("alice", "dave"), "alice", "dave", true, 1),
			Block(pair("alice", "dave"), "alice", "dave", false, 2),
			Block(pair("alice", "dave"), "alice", "dave", true, 3),
			Block(pair("alice", "carol"), "alice", "carol", false, 2),
			Block(pair("alice", "carol"), "alice", "carol", true, 3),
			Block(pair("alice", "carol"), "alice", "carol", false, 4),
		}
		const want = "dave"
		apply(t, s, recs...)
		wantBlocks(t, s, "alice", want)
		apply(t, s, recs...)
		wantBlocks(t, s, "alice", want)
		for _, r := range recs {
			apply(t, s, r)
			wantBlocks(t, s, "alice", want)
		}
		rev := slices.Clone(recs)
		slices.Reverse(rev)
		apply(t, s, rev...)
		wantBlocks(t, s, "alice", want)
		// An old record alone, as a consumer that restarted behind its
		// committed offset would apply it, does not bring a block back.
		apply(t, s, recs[0])
		apply(t, s, recs[7])
		wantBlocks(t, s, "alice", want)
		// The same in a store that saw the log only once, reversed.
		fresh := open(t)
		apply(t, fresh, rev...)
		wantBlocks(t, fresh, "alice", want)
	})
	t.Run("OthersBlocksInvisible", func(t *testing.T) {
		s := open(t)
		apply(t, s,
			Block(pair("alice", "bob"), "alice", "bob", true, 1),
			Block(pair("bob", "carol"), "bob", "carol", true, 1),
			Block(pair("alice", "bob"), "bob", "alice", true, 2),
			Block(pair("alice", "bob"), "bob", "alice", false, 3),
		)
		wantBlocks(t, s, "alice", "bob")
		wantBlocks(t, s, "bob", "carol")
		// Being blocked is not blocking.
		wantBlocks(t, s, "carol", "")
		// Ids that share a prefix stay apart.
		wantBlocks(t, s, "ali", "")
		wantBlocks(t, s, "alice2", "")
	})
	t.Run("RecordWithoutTimeRefused", func(t *testing.T) {
		s := open(t)
		bad := Block(pair("alice", "bob"), "alice", "bob", true, 1)
		bad.GetBlock().Time = nil
		if err := s.Apply(context.Background(), []*logv1.EventRecord{bad}); err == nil {
			t.Fatal("a block record without a time was applied")
		}
	})
}
