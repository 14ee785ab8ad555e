package platform_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/parleychat/parley/services/edge"
	"github.com/parleychat/parley/services/platform"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// writeRaw encodes and writes a client frame on a raw connection.
func writeRaw(ctx context.Context, ws *websocket.Conn, f *clientv1.ClientFrame) error {
	data, err := wire.Encode(wire.Binary, f)
	if err != nil {
		return err
	}
	return ws.Write(ctx, websocket.MessageBinary, data)
}

// liveHeap is the live heap after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestNonReadingClient (issue 14): a client that never reads its answers
// sends 1,000 get_history requests for pages of about 400 KB each. The
// edge stops reading it at MaxOutstanding unwritten answers, so the live
// heap grows by less than nonReaderHeapBound (the queue's 4 MiB bound and
// the batch being written, with room for the rest of the process), where
// queueing every answer would hold hundreds of megabytes; and another
// client's messages go through meanwhile. The rate limits are off here so
// that every request is a real page: the bound must hold without them.
func TestNonReadingClient(t *testing.T) {
	const nonReaderHeapBound = 32 << 20
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), Limits: edge.Limits{Off: true}})
	defer stop()
	ctx := tctx(t)
	alice, bob := e.dial("alice", "a", false), e.dial("bob", "b", false)
	g, err := alice.CreateGroup(ctx, "big", "bob", "mallory")
	if err != nil {
		t.Fatal(err)
	}
	conv := g.GetConversationId()
	text := strings.Repeat("x", 2000)
	for i := range 200 {
		if _, err := alice.Send(ctx, conv, fmt.Sprintf("%d %s", i, text)); err != nil {
			t.Fatal(err)
		}
	}
	waitHistory(t, alice.Client, conv, 201)

	before := liveHeap()
	mallory := authed(t, e, "mallory", wire.SubprotocolProto)
	wrote := make(chan int, 1)
	go func() {
		n := 0
		for ; n < 1000; n++ {
			f := &clientv1.ClientFrame{RequestId: fmt.Sprint(n), Frame: &clientv1.ClientFrame_GetHistory{GetHistory: &clientv1.GetHistory{ConversationId: conv, Limit: 200}}}
			if writeRaw(ctx, mallory, f) != nil {
				break
			}
		}
		wrote <- n
	}()
	if n := <-wrote; n != 1000 {
		t.Fatalf("mallory wrote %d requests of 1000", n)
	}
	// While mallory's answers pile up unread, bob talks to alice.
	var peak uint64
	for i := range 5 {
		sent := time.Now()
		acc, err := bob.Send(ctx, conv, fmt.Sprintf("bob %d", i))
		if err != nil {
			t.Fatalf("bob's send %d during the flood: %v", i, err)
		}
		alice.upTo(t, conv, acc.GetSeq())
		t.Logf("bob's send %d: delivered in %v", i, time.Since(sent))
		peak = max(peak, liveHeap())
		time.Sleep(200 * time.Millisecond)
	}
	growth := int64(peak) - int64(before)
	t.Logf("live heap %d MiB before, peak %d MiB while mallory does not read (growth %d KiB)", before>>20, peak>>20, growth>>10)
	if growth > nonReaderHeapBound {
		t.Fatalf("live heap grew by %d MiB with a client not reading, bound %d MiB", growth>>20, nonReaderHeapBound>>20)
	}
	// The pause comes once the socket's buffers and half the queue hold
	// unread pages; on a loaded machine the pages come slowly, so the
	// check waits for it rather than expecting it by the end of bob's
	// sends (a CI run saw 0 there, with the sends taking 100-150 ms).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		n := metric(t, e, `parley_read_paused_total{reason="outstanding",service="edge"}`)
		if n >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("parley_read_paused_total = %v 30 s after the flood, want the edge to have paused reading mallory", n)
		}
	}
}

// metric reads one sample from the edge's admin /metrics.
func metric(t *testing.T, e *env, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + e.p.Edge.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// TestLimitsAtTheEdge: with the default limits a flood of sends is
// answered RATE_LIMITED with a retry-after while another user's sends go
// through; a user's connection past the cap is closed with 4029; an
// Origin other than the edge's own host is refused; a client that answers
// no ping is closed as idle; and /metrics and the probes are on the
// admin address only.
func TestLimitsAtTheEdge(t *testing.T) {
	lim := edge.DefaultLimits()
	lim.ConnsPerUser = 2
	lim.PingInterval, lim.IdleTimeout = 100*time.Millisecond, 500*time.Millisecond
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), Limits: lim})
	defer stop()
	ctx := tctx(t)

	t.Run("admin only on the admin address", func(t *testing.T) {
		public, admin := "http://"+e.p.Edge.HTTPAddr(), "http://"+e.p.Edge.AdminAddr()
		for _, path := range []string{"/metrics", "/healthz", "/readyz", "/debug/pprof/"} {
			resp, err := http.Get(public + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("public %s: %d, want 404", path, resp.StatusCode)
			}
		}
		for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
			resp, err := http.Get(admin + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("admin %s: %d, want 200", path, resp.StatusCode)
			}
		}
		resp, err := http.Get(public + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("public page: %d, want 200", resp.StatusCode)
		}
	})

	t.Run("origin", func(t *testing.T) {
		h := http.Header{}
		h.Set("Origin", "https://evil.example")
		_, resp, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{Subprotocols: []string{wire.SubprotocolProto}, HTTPHeader: h})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("foreign origin: %v (%v), want 403", err, resp)
		}
		h.Set("Origin", "http://"+e.p.Edge.HTTPAddr())
		ws, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{Subprotocols: []string{wire.SubprotocolProto}, HTTPHeader: h})
		if err != nil {
			t.Fatalf("own origin refused: %v", err)
		}
		ws.CloseNow()
	})

	t.Run("flood", func(t *testing.T) {
		alice, bob := e.dial("alice", "a", false), e.dial("bob", "b", false)
		// Authenticated first, so no event can come before its answer.
		flood := authed(t, e, "alice", wire.SubprotocolProto)
		d, err := alice.OpenDirect(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		conv := d.GetConversationId()
		const n = 100
		began := time.Now()
		go func() {
			for i := range n {
				f := &clientv1.ClientFrame{RequestId: fmt.Sprint(i), Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{
					ConversationId: conv, ClientMsgId: fmt.Sprintf("flood-%d", i), Text: "spam"}}}
				if writeRaw(ctx, flood, f) != nil {
					return
				}
			}
		}()
		accepted, limited := 0, 0
		for accepted+limited < n {
			f := readFrame(t, flood, wire.Binary)
			switch {
			case f.GetAccepted() != nil:
				accepted++
			case f.GetError().GetCode() == chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED:
				limited++
				if f.GetError().GetRetryAfterMs() == 0 {
					t.Fatalf("RATE_LIMITED without retry_after_ms: %v", f)
				}
			case f.GetEvents() != nil:
			default:
				t.Fatalf("unexpected answer %v", f)
			}
		}
		took := time.Since(began)
		t.Logf("flood of %d sends in %v: %d accepted, %d RATE_LIMITED", n, took, accepted, limited)
		// The burst and what the rate refills while the flood lasts.
		r := lim.ConnMessages
		if most := r.Burst + int(r.Events*took.Seconds()/r.Per.Seconds()) + 1; limited == 0 || accepted > most {
			t.Fatalf("%d of %d flooded sends accepted in %v (at most %d), %d refused", accepted, n, took, most, limited)
		}
		// Sending on past RATE_LIMITED, the flood was read no faster
		// than the limit.
		if v := metric(t, e, `parley_read_paused_total{reason="rate_limited",service="edge"}`); v < 1 {
			t.Errorf("parley_read_paused_total{reason=rate_limited} = %v, want the flood paused", v)
		}
		if _, err := bob.Send(ctx, conv, "still here"); err != nil {
			t.Fatalf("bob's send during alice's flood: %v", err)
		}
		// The message bucket refuses first; the request bucket (50/s) only
		// if the flood is read fast enough to empty it.
		msgs := metric(t, e, `parley_rate_limited_total{limit="conn_messages",service="edge"}`)
		reqs := metric(t, e, `parley_rate_limited_total{limit="conn_requests",service="edge"}`)
		if msgs < 1 || msgs+reqs != float64(limited) {
			t.Errorf("refusals counted: %v conn_messages + %v conn_requests, want %d in all", msgs, reqs, limited)
		}
	})

	t.Run("connections per user", func(t *testing.T) {
		authed(t, e, "carol", wire.SubprotocolProto)
		authed(t, e, "carol", wire.SubprotocolProto)
		ws := rawConn(t, e.url, wire.SubprotocolProto)
		tok, _ := e.minter.Mint("carol", time.Hour)
		if err := writeRaw(ctx, ws, &clientv1.ClientFrame{RequestId: "a", Frame: &clientv1.ClientFrame_Authenticate{Authenticate: &clientv1.Authenticate{Token: tok}}}); err != nil {
			t.Fatal(err)
		}
		f := readFrame(t, ws, wire.Binary)
		if f.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED || f.GetError().GetRetryAfterMs() == 0 || f.GetRequestId() != "a" {
			t.Fatalf("third connection: %v, want RATE_LIMITED with retry_after_ms", f)
		}
		if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != edge.CloseTooManyConnections {
			t.Fatalf("third connection: %v, want close %d", err, edge.CloseTooManyConnections)
		}
	})

	t.Run("idle", func(t *testing.T) {
		// A raw connection answers pings only while it reads: not reading
		// for a while, it answers none and is closed as idle.
		ws := authed(t, e, "dave", wire.SubprotocolProto)
		time.Sleep(2 * lim.IdleTimeout)
		_, _, err := ws.Read(ctx)
		if websocket.CloseStatus(err) != edge.CloseIdle {
			t.Fatalf("silent connection: %v, want close %d", err, edge.CloseIdle)
		}
		// A client that reads answers the pings and stays.
		erin := e.dial("erin", "e", false)
		time.Sleep(4 * lim.IdleTimeout)
		if err := erin.Ping(ctx); err != nil {
			t.Fatalf("a reading client was closed: %v", err)
		}
	})
}

// TestPingBurstWhileReading (issue 19): a client that reads continuously
// and sends a burst of 1,600 pings with the default limits is never
// closed: every ping is answered, with its request id, by pong or by
// RATE_LIMITED with a retryAfterMs. Its answers are bounded by
// MaxOutstanding, far below the queue bound, so requests alone never make
// the edge close a connection with 4000.
func TestPingBurstWhileReading(t *testing.T) {
	const pings = 1600
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir()})
	defer stop()
	ws := authed(t, e, "alice", wire.SubprotocolJSON)
	ctx, cancel := context.WithTimeout(tctx(t), 60*time.Second)
	defer cancel()
	type tally struct {
		pongs, limited int
		err            error
	}
	done := make(chan tally, 1)
	go func() {
		var n tally
		for seen := map[string]bool{}; n.pongs+n.limited < pings; {
			_, data, err := ws.Read(ctx)
			if err != nil {
				n.err = err
				break
			}
			f, err := wire.DecodeServer(wire.JSON, data)
			switch {
			case err != nil:
				n.err = err
			case seen[f.GetRequestId()] || f.GetRequestId() == "":
				n.err = fmt.Errorf("answer %v: request id empty or answered before", f)
			case f.GetPong() != nil:
				n.pongs++
			case f.GetError().GetCode() == chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED && f.GetError().GetRetryAfterMs() > 0:
				n.limited++
			default:
				n.err = fmt.Errorf("unexpected answer %v", f)
			}
			if n.err != nil {
				break
			}
			seen[f.GetRequestId()] = true
		}
		done <- n
	}()
	for i := range pings {
		data, _ := wire.Encode(wire.JSON, &clientv1.ClientFrame{RequestId: fmt.Sprint(i), Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}})
		if err := ws.Write(ctx, websocket.MessageText, data); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
	n := <-done
	if n.err != nil {
		t.Fatalf("after %d pongs and %d RATE_LIMITED: %v (close code %d)", n.pongs, n.limited, n.err, websocket.CloseStatus(n.err))
	}
	t.Logf("%d pings: %d pong, %d RATE_LIMITED", pings, n.pongs, n.limited)
	if n.limited == 0 {
		t.Errorf("no RATE_LIMITED in a burst of %d pings: the request rate did not apply", pings)
	}
}
