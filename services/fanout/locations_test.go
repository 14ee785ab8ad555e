package fanout

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/presenceclient"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"github.com/parleychat/parley/services/presence"
	"github.com/prometheus/client_golang/prometheus"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// TestLocationCache runs the cache against two real presence instances
// (kfake): answers are cached, "nowhere" included; a new session is seen
// at the next lookup because its report waits for the invalidation; an
// answer an invalidation overtook is not kept; and when an instance's
// stream breaks, its users are asked for again.
func TestLocationCache(t *testing.T) {
	brokers, _ := topicstest.Cluster(t, 4)
	const lease = 600 * time.Millisecond
	var addrs []string
	var stops []func()
	for i := range 2 {
		svc, err := presence.New(presence.Config{GRPCAddr: "127.0.0.1:0", Brokers: brokers, Instance: i, Instances: 2,
			WatchLease: lease, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { svc.Run(ctx); close(done) }()
		stop := sync.OnceFunc(func() { cancel(); <-done })
		t.Cleanup(stop)
		stops = append(stops, stop)
		addrs = append(addrs, svc.Addr())
		topicstest.WaitFor(t, "presence ready", svc.Probe.Ready)
	}
	pc, err := presenceclient.Dial(addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var calls atomic.Int32
	// hold, when set, runs after presence answered and before the answer
	// is returned: the window an invalidation can overtake it in.
	var hold atomic.Pointer[func([]string)]
	lookup := func(ctx context.Context, users []string) ([]*presencev1.UserLocation, error) {
		calls.Add(1)
		resp, err := pc.Locate(ctx, &presencev1.LocateRequest{UserIds: users})
		if h := hold.Load(); h != nil {
			(*h)(users)
		}
		return resp.GetLocations(), err
	}
	l := newLocations(pc, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), lookup)
	ctx, cancel := context.WithCancel(t.Context())
	watched := make(chan struct{})
	go func() { l.watch(ctx); close(watched) }()
	defer func() { cancel(); <-watched }()
	leased := func(i int) bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return time.Now().Before(l.insts[i].validUntil)
	}
	topicstest.WaitFor(t, "both leases", func() bool { return leased(0) && leased(1) })

	users := []string{"alice", "bob", "carol", "dave"}
	if o := []int{pc.Owner("alice"), pc.Owner("bob"), pc.Owner("carol"), pc.Owner("dave")}; !slices.Contains(o, 0) || !slices.Contains(o, 1) {
		t.Fatalf("owners %v: the users should span both instances", o)
	}
	where := func(users ...string) map[string][]string {
		t.Helper()
		locs, err := l.locate(ctx, users)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]string{}
		for _, loc := range locs {
			out[loc.GetUserId()] = loc.GetPushAddresses()
		}
		return out
	}
	// Presence fences reports for a lease after it starts, for watchers
	// of its predecessor.
	time.Sleep(lease)
	report := func(node, session, user string) {
		t.Helper()
		if _, err := pc.Report(ctx, &presencev1.ReportRequest{NodeId: node, PushAddress: node + ":1", Snapshot: true,
			Connected: []*presencev1.Session{{SessionId: session, UserId: user, DeviceId: "d"}}}); err != nil {
			t.Fatal(err)
		}
	}

	if got := where(users...); len(got) != 0 || calls.Load() != 1 {
		t.Fatalf("first lookup: %v after %d calls", got, calls.Load())
	}
	if got := where(users...); len(got) != 0 || calls.Load() != 1 {
		t.Fatalf("second lookup: %v after %d calls; want it from the cache", got, calls.Load())
	}
	report("e1", "s1", "bob")
	if got := where(users...); len(got) != 1 || got["bob"][0] != "e1:1" || calls.Load() != 2 {
		t.Fatalf("after bob connected: %v after %d calls; want bob at e1 (asked again for him only)", got, calls.Load())
	}

	// erin is asked for; presence answers "nowhere", and before that
	// answer is cached she connects: it must not be kept.
	answered, release := make(chan struct{}), make(chan struct{})
	h := func(users []string) {
		if slices.Contains(users, "erin") {
			close(answered)
			<-release
		}
	}
	hold.Store(&h)
	inFlight := make(chan map[string][]string, 1)
	go func() { inFlight <- where("erin") }()
	<-answered
	report("e2", "s2", "erin")
	hold.Store(nil)
	close(release)
	if got := <-inFlight; len(got) != 0 {
		t.Fatalf("the answer in flight: %v", got)
	}
	if got := where("erin"); len(got["erin"]) != 1 || got["erin"][0] != "e2:1" {
		t.Fatalf("after erin connected: %v; the overtaken answer was kept", got)
	}

	// An instance goes away: its share is no longer trusted.
	i := pc.Owner("alice")
	stops[i]()
	topicstest.WaitFor(t, "the lease of the stopped instance ended", func() bool { return !leased(i) })
	before := calls.Load()
	l.locate(ctx, []string{"alice"})
	if calls.Load() == before {
		t.Fatal("alice was answered from the cache of an instance that is gone")
	}
}
