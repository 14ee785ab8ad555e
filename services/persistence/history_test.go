package persistence

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/services/persistence/history"
	"github.com/parleychat/parley/services/persistence/history/historytest"
	"github.com/parleychat/parley/services/persistence/history/pebblestore"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// queryRecorder is a store that remembers the History queries it is given.
type queryRecorder struct {
	history.Store
	queries []history.Query
}

func (r *queryRecorder) History(ctx context.Context, conv string, q history.Query) (history.Page, error) {
	r.queries = append(r.queries, q)
	return r.Store.History(ctx, conv, q)
}

// TestHistoryHandsOnTheLastSeq: History authorizes by reading the
// conversation's summary, and hands that summary's last seq to the store,
// which then need not read it again (one Cassandra round trip less per
// page, TestHistoryWithKnownLastSeq in cassandrastore).
func TestHistoryHandsOnTheLastSeq(t *testing.T) {
	pebble, err := pebblestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer pebble.Close()
	recs := []*logv1.EventRecord{historytest.Created("a", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "a", "alice", "bob")}
	for seq := uint64(2); seq <= 5; seq++ {
		recs = append(recs, historytest.Posted("a", seq, "bob", fmt.Sprint("m", seq)))
	}
	if err := pebble.Apply(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	store := &queryRecorder{Store: pebble}
	s, err := New(Config{Brokers: []string{"127.0.0.1:1"}, GRPCAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Registry: metrics.NewRegistry()}, store)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := s.History(t.Context(), &persistencev1.HistoryRequest{UserId: "alice", ConversationId: "a", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetEvents()); n != 2 || resp.GetEvents()[1].GetSeq() != 5 || !resp.GetHasMore() {
		t.Fatalf("page %v (more %v), want seqs 4 and 5 with more", resp.GetEvents(), resp.GetHasMore())
	}
	if len(store.queries) != 1 || store.queries[0].LastSeq != 5 {
		t.Fatalf("store queried with %+v, want one query carrying last seq 5", store.queries)
	}
}
