package persistence

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/services/persistence/history/historytest"
	"github.com/parleychat/parley/services/persistence/history/pebblestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// TestCatchUp: one call answers each cursor as History would, in the
// request's order: the events after it (a page at most, has_more beyond),
// and NOT_FOUND for a conversation the user is not in or that does not
// exist, without failing the other pages.
func TestCatchUp(t *testing.T) {
	store, err := pebblestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	recs := []*logv1.EventRecord{
		historytest.Created("a", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "a", "alice", "bob"),
		historytest.Created("b", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "b", "alice", "carol"),
		historytest.Created("secret", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "s", "bob", "carol"),
	}
	for seq := uint64(2); seq <= 6; seq++ {
		recs = append(recs, historytest.Posted("a", seq, "bob", fmt.Sprint("a", seq)), historytest.Posted("b", seq, "carol", fmt.Sprint("b", seq)))
	}
	if err := store.Apply(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Brokers: []string{"127.0.0.1:1"}, GRPCAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Registry: metrics.NewRegistry()}, store)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := s.CatchUp(t.Context(), &persistencev1.CatchUpRequest{UserId: "alice", Limit: 3, Cursors: []*persistencev1.CatchUpCursor{
		{ConversationId: "b", AfterSeq: 4}, {ConversationId: "secret"}, {ConversationId: "a", AfterSeq: 1}, {ConversationId: "nowhere"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	describe := func(p *persistencev1.CatchUpPage) string {
		if p.GetErrorCode() != 0 {
			return fmt.Sprintf("%s: %v", p.GetConversationId(), codes.Code(p.GetErrorCode()))
		}
		out := p.GetConversationId() + ":"
		for _, ev := range p.GetEvents() {
			out += fmt.Sprint(" ", ev.GetSeq())
		}
		return out + fmt.Sprint(" more=", p.GetHasMore())
	}
	want := []string{"b: 5 6 more=false", "secret: NotFound", "a: 2 3 4 more=true", "nowhere: NotFound"}
	if len(resp.GetPages()) != len(want) {
		t.Fatalf("%d pages, want %d", len(resp.GetPages()), len(want))
	}
	for i, p := range resp.GetPages() {
		if got := describe(p); got != want[i] {
			t.Errorf("page %d: %s, want %s", i, got, want[i])
		}
	}
	many := &persistencev1.CatchUpRequest{UserId: "alice"}
	for range maxCatchUpCursors + 1 {
		many.Cursors = append(many.Cursors, &persistencev1.CatchUpCursor{ConversationId: "a"})
	}
	if _, err := s.CatchUp(t.Context(), many); status.Code(err) != codes.InvalidArgument {
		t.Errorf("%d cursors: %v, want INVALID_ARGUMENT", len(many.Cursors), err)
	}
}
