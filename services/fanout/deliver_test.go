package fanout

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/metrics"
	"google.golang.org/grpc"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	edgev1 "github.com/parleychat/parley/pkg/pb/parley/edge/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// liveEdge takes its time over a Push, as a busy edge does, and keeps
// only the pushes whose caller was still waiting when it finished.
type liveEdge struct {
	edgev1.UnimplementedEdgeServiceServer
	presencev1.UnimplementedPresenceServiceServer
	// where is every user's push addresses, for Locate.
	where []string
	mu    sync.Mutex
	got   int
}

func (e *liveEdge) Push(ctx context.Context, req *edgev1.PushRequest) (*edgev1.PushResponse, error) {
	select {
	case <-time.After(300 * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got += len(req.GetDeliveries())
	return &edgev1.PushResponse{}, nil
}

func (e *liveEdge) Locate(_ context.Context, req *presencev1.LocateRequest) (*presencev1.LocateResponse, error) {
	resp := &presencev1.LocateResponse{}
	for _, u := range req.GetUserIds() {
		resp.Locations = append(resp.Locations, &presencev1.UserLocation{UserId: u, PushAddresses: e.where})
	}
	return resp, nil
}

// TestDeadEdgeDoesNotStopPushes: a user's device came back on a new edge
// while presence still holds its session on the dead one (until that
// edge's lease lapses, 10 s). The push to the dead edge fails at once;
// the push to the live edge must still land, or the device misses the
// event until a later one shows the gap. (`parley run`'s crash loop
// found every device short of the last events after each restart: the
// failure cancelled the pushes beside it.)
func TestDeadEdgeDoesNotStopPushes(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	live := &liveEdge{where: []string{deadAddr, lis.Addr().String()}}
	gs := grpc.NewServer()
	edgev1.RegisterEdgeServiceServer(gs, live)
	presencev1.RegisterPresenceServiceServer(gs, live)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	// The Kafka client is never used: deliver is called directly.
	s, err := New(Config{Brokers: []string{"127.0.0.1:1"}, PresenceAddrs: []string{lis.Addr().String()}, NoLocationCache: true,
		Logger: slog.New(slog.DiscardHandler), Registry: metrics.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.cl.Close()
		s.presence.Close()
		s.edges.Close()
	})
	err = s.deliver(t.Context(), []*logv1.EventRecord{{
		Event: &chatv1.Event{ConversationId: "c", Seq: 1, EventId: "e1"}, RecipientIds: []string{"bob"},
	}})
	if err == nil || !strings.Contains(err.Error(), deadAddr) {
		t.Errorf("deliver: %v, want the dead edge %s named", err, deadAddr)
	}
	live.mu.Lock()
	defer live.mu.Unlock()
	if live.got != 1 {
		t.Fatalf("the live edge got %d deliveries, want 1", live.got)
	}
}
