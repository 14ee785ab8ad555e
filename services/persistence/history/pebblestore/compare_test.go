package pebblestore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/parleychat/parley/services/persistence/history/historytest"
	"github.com/parleychat/parley/services/persistence/history/pebblestore"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// TestCompareFindsEachKindOfDifference: historytest.Compare, which the
// replay tests rely on, agrees on stores written from the same log and
// names what differs when one record is missing, whatever its kind.
func TestCompareFindsEachKindOfDifference(t *testing.T) {
	ctx := context.Background()
	const c = "c"
	log := []*logv1.EventRecord{
		historytest.FromDevice(historytest.Created(c, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "t", "alice", "bob"), "a1"),
		historytest.FromDevice(historytest.Posted(c, 2, "alice", "hello"), "a1"),
		historytest.Reacted(c, 3, "bob", 2, "👍", true),
		historytest.Edited(c, 4, "alice", 2, "hello!", true),
		historytest.Receipt(c, "bob", "b1", 4, 4),
		historytest.Flags(c, "bob", 1, true, false),
	}
	log = append(log, historytest.Inbox("alice", []string{"bob"}, []chatv1.ContactState{chatv1.ContactState_CONTACT_STATE_OUTGOING})...)
	users := []string{"alice", "bob"}
	open := func(recs ...*logv1.EventRecord) *pebblestore.Store {
		s, err := pebblestore.Open("", pebblestore.InMemory())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if err := s.Apply(ctx, recs); err != nil {
			t.Fatal(err)
		}
		return s
	}
	full := open(log...)
	if err := historytest.Compare(ctx, full, open(log...), users); err != nil {
		t.Fatalf("same log, yet: %v", err)
	}
	for i, want := range map[int]string{
		2: "history of c for alice",    // the reaction count
		3: "alice's conversation list", // the edit (its preview, seq, read position)
		4: "receipts of c",             // the read position (alice, compared first, sees it there)
		5: "bob's conversation list",   // the flags
		7: "alice's contacts",          // the inbox item (compared before the list it is in)
	} {
		without := append(append([]*logv1.EventRecord(nil), log[:i]...), log[i+1:]...)
		err := historytest.Compare(ctx, full, open(without...), users)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("without record %d: %v; want a difference in %s", i, err, want)
		}
		t.Logf("without record %d: %v", i, err)
	}
}
