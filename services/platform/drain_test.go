package platform_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/services/edge"
)

// closeSeen is when a client saw its connection end, and the close code.
type closeSeen struct {
	at   time.Time
	code websocket.StatusCode
}

// TestEdgeDrainMovesClientsWithoutLoss: twelve devices hold connections
// on edge A (through a proxy standing in for the load balancer) while
// alice, on edge B, posts a steady stream into two groups they are in.
// Edge A is stopped with a 2 s drain window, as SIGTERM would: its
// readiness goes off at once, new WebSockets get 503, and its
// connections are closed with 4002 (reconnect elsewhere) a few at a time
// across the window. Each device reconnects by itself, through the
// proxy now pointing at B, and resumes. Every device must then hold
// every message of the run exactly once and in order, every device must
// have been closed once, with 4002, and the closes must be spread over
// the window rather than come all at once.
func TestEdgeDrainMovesClientsWithoutLoss(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const window = 2 * time.Second
	var presence []string
	for _, pr := range e.p.Presence {
		presence = append(presence, pr.Addr())
	}
	a, err := edge.New(edge.Config{Registry: metrics.NewRegistry(), HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		IngestAddr: e.p.Ingest.Addr(), PersistenceAddr: e.p.Persistence.Addr(), PresenceAddrs: presence,
		JWTSecret: secret, NodeID: "edge-a", Drain: window})
	if err != nil {
		t.Fatal(err)
	}
	actx, stopA := context.WithCancel(context.Background())
	defer stopA()
	aDone := make(chan error, 1)
	go func() { aDone <- a.Run(actx) }()
	for deadline := time.Now().Add(20 * time.Second); !a.Probe.Ready(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("edge A not ready in 20s: %v", a.Probe.NotReady())
		}
	}
	lb := newProxy(t, a.HTTPAddr())

	alice := e.dial("alice", "alice-1", false)
	newTally(t, "alice", alice.Client)
	const devices = 12
	var users []string
	tallies := map[string]*tally{}
	var mu sync.Mutex
	closes := map[string][]closeSeen{}
	for i := range devices {
		user := fmt.Sprintf("r%02d", i)
		users = append(users, user)
		c := e.through(lb, user, user+"-phone", sdk.Options{Reconnect: &sdk.ReconnectPolicy{MinDelay: 50 * time.Millisecond, MaxDelay: 500 * time.Millisecond}})
		tallies[user] = newTally(t, user, c)
		go func() {
			for {
				select {
				case st := <-c.States():
					if st.State == sdk.StateReconnecting && st.Attempt == 0 {
						mu.Lock()
						closes[user] = append(closes[user], closeSeen{time.Now(), websocket.CloseStatus(st.Err)})
						mu.Unlock()
					}
				case <-c.Done():
					return
				}
			}
		}()
	}
	var convs []string
	for _, title := range []string{"one", "two"} {
		acc, err := alice.CreateGroup(ctx, title, users...)
		if err != nil {
			t.Fatal(err)
		}
		convs = append(convs, acc.GetConversationId())
	}

	// alice posts until told to stop, a message every few milliseconds.
	s := &sender{last: map[string]uint64{}, progress: make(chan struct{}, 1)}
	stopSending := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stopSending:
				sent <- nil
				return
			case <-time.After(5 * time.Millisecond):
			}
			conv := convs[i%len(convs)]
			acc, err := alice.Send(ctx, conv, fmt.Sprintf("message %d", i))
			if err != nil {
				sent <- fmt.Errorf("send %d: %w", i, err)
				return
			}
			s.mu.Lock()
			s.last[conv] = max(s.last[conv], acc.GetSeq())
			s.sent++
			s.mu.Unlock()
			select {
			case s.progress <- struct{}{}:
			default:
			}
		}
	}()
	atLeast := func(k int) func(map[string]uint64, int) bool {
		return func(_ map[string]uint64, n int) bool { return n >= k }
	}
	s.waitSent(t, 40)
	for _, u := range users {
		tallies[u].waitFor("20 events in before the drain", atLeast(20))
	}

	// The load balancer stops routing new connections to A (what the
	// preStop wait is for), then A gets its SIGTERM.
	lb.setUpstream(e.p.Edge.HTTPAddr())
	drainStart := time.Now()
	stopA()

	// While it drains, A says why it is not ready and refuses new
	// WebSockets with 503, so a balancer still routing to it retries.
	for deadline := time.Now().Add(window / 2); ; time.Sleep(5 * time.Millisecond) {
		code, body := httpGet(t, "http://"+a.AdminAddr()+"/readyz")
		if code == http.StatusServiceUnavailable {
			if body != "not ready: draining\n" {
				t.Fatalf("A's /readyz while draining: %q", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's /readyz still %d %q after %s", code, body, window/2)
		}
	}
	_, resp, err := websocket.Dial(ctx, "ws://"+a.HTTPAddr()+"/ws", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a new WebSocket to A while it drains: %v (response %v), want 503", err, resp)
	}

	select {
	case err := <-aDone:
		if err != nil {
			t.Fatalf("edge A run: %v", err)
		}
	case <-time.After(window + 30*time.Second):
		t.Fatal("edge A did not stop")
	}
	if d := time.Since(drainStart); d < window/2 {
		t.Errorf("edge A stopped %s after its SIGTERM, within half its %s drain window", d, window)
	}

	// Messages go on after the drain, all devices now on B.
	after := s.count()
	s.waitSent(t, after+40)
	close(stopSending)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	want := s.last
	total := s.sent
	s.mu.Unlock()
	for _, u := range users {
		ta := tallies[u]
		ta.waitFor("caught up with every message", func(last map[string]uint64, _ int) bool {
			for conv, seq := range want {
				if last[conv] < seq {
					return false
				}
			}
			return true
		})
		// The tally fails on any gap, duplicate or disorder; the count
		// says nothing came twice either side of the seam.
		if k := ta.count(); k != total+len(convs) {
			t.Errorf("%s got %d events, want %d (%d messages, %d groups created)", u, k, total+len(convs), total, len(convs))
		}
	}

	mu.Lock()
	defer mu.Unlock()
	var offsets []time.Duration
	for _, u := range users {
		cs := closes[u]
		if len(cs) != 1 || cs[0].code != edge.CloseReconnect {
			t.Errorf("%s saw closes %v, want one, with %d", u, cs, edge.CloseReconnect)
			continue
		}
		offsets = append(offsets, cs[0].at.Sub(drainStart))
	}
	if len(offsets) != devices {
		t.FailNow()
	}
	slices.Sort(offsets)
	// Spread: twelve batches 167 ms apart, ideally 1.83 s from the first
	// to the last; delays on a busy machine only stretch that. All at
	// once would be a few milliseconds.
	if span := offsets[len(offsets)-1] - offsets[0]; span < window/3 {
		t.Errorf("closes spread over %s of a %s window, want at least %s: %v", span, window, window/3, offsets)
	}
	batches := 1
	for i := 1; i < len(offsets); i++ {
		if offsets[i]-offsets[i-1] > 40*time.Millisecond {
			batches++
		}
	}
	if batches < devices/3 {
		t.Errorf("closes came in %d bursts, want at least %d: %v", batches, devices/3, offsets)
	}
	t.Logf("%d messages; closes at %v (%d bursts)", total, offsets, batches)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
