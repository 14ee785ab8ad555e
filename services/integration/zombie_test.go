package integration

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/wire"
	"golang.org/x/sync/errgroup"

	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.cmd.Process.Signal(sig)
}

// metric reads one sample of the process's /metrics, 0 if absent.
func (p *proc) metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.health + "/metrics")
	if err != nil {
		t.Fatalf("%s metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// rawReader reads pushed events on a bare WebSocket, without the SDK,
// which would drop a repeated seq itself: it sees exactly what the edge
// sends, and fails on a gap, a repeat or a reordering.
func rawReader(t *testing.T, ctx context.Context, c *cluster, edge int, user, device string) (seen func() int) {
	t.Helper()
	ws, _, err := websocket.Dial(ctx, c.edgeURLs[edge], &websocket.DialOptions{Subprotocols: []string{wire.SubprotocolProto}})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(1 << 24)
	t.Cleanup(func() { ws.CloseNow() })
	tok, _ := c.minter.Mint(user, time.Hour)
	auth, _ := wire.Encode(wire.Binary, &clientv1.ClientFrame{RequestId: "a", Frame: &clientv1.ClientFrame_Authenticate{Authenticate: &clientv1.Authenticate{Token: tok, DeviceId: device}}})
	if err := ws.Write(ctx, websocket.MessageBinary, auth); err != nil {
		t.Fatal(err)
	}
	// Once authenticated, every event sequenced after is pushed here.
	_, data, err := ws.Read(ctx)
	if f, derr := wire.DecodeServer(wire.Binary, data); err != nil || derr != nil || f.GetAuthenticated() == nil {
		t.Fatalf("%s: authenticate: %v %v %v", device, f, err, derr)
	}
	var n atomic.Int64
	errc := make(chan error, 1)
	go func() {
		last := map[string]uint64{}
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			f, err := wire.DecodeServer(wire.Binary, data)
			if err != nil {
				errc <- err
				return
			}
			for _, ev := range f.GetEvents().GetEvents() {
				conv := ev.GetConversationId()
				if ev.GetSeq() != last[conv]+1 {
					errc <- fmt.Errorf("%s: conversation %s seq %d after %d", device, conv, ev.GetSeq(), last[conv])
					return
				}
				last[conv] = ev.GetSeq()
				n.Add(1)
			}
		}
	}()
	return func() int {
		select {
		case err := <-errc:
			t.Fatal(err)
		default:
		}
		return int(n.Load())
	}
}

// TestZombieSequencer (real stack): with two ingest nodes, one is frozen
// (SIGSTOP) mid-stream past the group's session timeout, so the other takes
// its partitions, then thawed: a sequencer that does not yet know it lost
// its partitions may produce the events of the batch in hand, but its
// transaction cannot commit. Across all of it no device sees a gap, a
// repeat or a reordering, history holds every accepted message once at its
// seq, and the consumers never even meet a copy to skip.
func TestZombieSequencer(t *testing.T) {
	s := requireStack(t)
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	other := c.addIngest("ingest-1")
	edge := c.addEdge("edge2", other) // senders go through the node that stays up
	creator := discardEvents(c.dial(edge, "alice", "alice-creator"))
	const convs, senders, perSender, freezeAt = 20, 6, 250, 300
	reader := rawReader(t, ctx, c, 1, "bob", "bob-raw")
	ids := createGroups(t, ctx, creator, convs, "zombie", "bob")
	l := newLedger(ids)

	var count atomic.Int64
	freeze := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	for k := range senders {
		user := []string{"alice", "bob"}[k%2]
		cl := discardEvents(c.dial(edge, user, fmt.Sprintf("%s-sender-%d", user, k)))
		g.Go(func() error {
			for i := range perSender {
				conv := ids[(k*7+i)%len(ids)]
				id := fmt.Sprintf("%s-%d-%d", user, k, i)
				text := fmt.Sprintf("message %d from sender %d", i, k)
				acc, err := sendRetrying(gctx, cl, conv, id, text)
				if err != nil {
					return fmt.Errorf("sender %d message %d: %w", k, i, err)
				}
				if err := l.record(conv, id, acc.GetSeq(), text); err != nil {
					return err
				}
				if count.Add(1) == freezeAt {
					close(freeze)
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		select {
		case <-freeze:
		case <-gctx.Done():
			return nil
		}
		zombie := c.procs["ingest"]
		t.Logf("SIGSTOP ingest after %d accepted messages", count.Load())
		zombie.signal(syscall.SIGSTOP)
		// Past the session timeout (15 s): the group expels it and the other
		// node takes its partitions.
		time.Sleep(20 * time.Second)
		t.Logf("SIGCONT ingest at %d accepted messages", count.Load())
		zombie.signal(syscall.SIGCONT)
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	want := senders*perSender + convs
	for deadline := time.Now().Add(90 * time.Second); reader() < want; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("raw reader got %d of %d events", reader(), want)
		}
	}
	l.verifyHistory(t, ctx, discardEvents(c.dial(0, "bob", "bob-history")))
	// Losing its partitions is routine: the thawed node must still run
	// (it used to exit on its failed commit).
	select {
	case <-c.procs["ingest"].exited:
		t.Fatalf("the thawed ingest exited:\n%s", c.procs["ingest"].tail())
	default:
	}
	// A zombie's batch is aborted, so committed readers never see a copy
	// (before transactions, the consumers' first-seq-wins skipped them).
	for _, svc := range []string{"persistence", "fanout"} {
		if n := c.procs[svc].metric(t, `parley_stale_events_total{service="`+svc+`"}`); n != 0 {
			t.Fatalf("%s skipped %v copies of events: a zombie's transaction committed", svc, n)
		}
	}
}
