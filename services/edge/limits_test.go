package edge

import (
	"context"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/server/metrics"
	"golang.org/x/time/rate"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rate
		err  bool
	}{
		{"5/s", Rate{Events: 5, Per: time.Second, Burst: 5}, false},
		{"5/s:20", Rate{Events: 5, Per: time.Second, Burst: 20}, false},
		{"120/h:30", Rate{Events: 120, Per: time.Hour, Burst: 30}, false},
		{"0.5/m", Rate{Events: 0.5, Per: time.Minute, Burst: 1}, false},
		{"off", Rate{Off: true}, false},
		{"5", Rate{}, true},
		{"5/d", Rate{}, true},
		{"-1/s", Rate{}, true},
		{"5/s:0", Rate{}, true},
		{"x/s", Rate{}, true},
	} {
		got, err := ParseRate(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err == nil {
			if back, _ := ParseRate(got.String()); back != got {
				t.Errorf("ParseRate(%q).String() = %q does not read back", tc.in, got.String())
			}
		}
	}
}

// TestLimitFlags: each limit is a flag, -limits-off turns the rates and
// caps off, and the zero values take the defaults.
func TestLimitFlags(t *testing.T) {
	var l Limits
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	l.RegisterFlags(fs)
	if err := fs.Parse([]string{"-conn-message-rate", "2/s:3", "-max-conns-per-user", "4", "-trusted-proxies", "10.0.0.0/8,192.0.2.1",
		"-allowed-origins", "app.example.com, *.example.org", "-idle-timeout", "1m"}); err != nil {
		t.Fatal(err)
	}
	l.defaults()
	if l.ConnMessages != (Rate{Events: 2, Per: time.Second, Burst: 3}) || l.ConnsPerUser != 4 || l.IdleTimeout != time.Minute {
		t.Errorf("flags not taken: %+v", l)
	}
	if l.UserMessages != DefaultLimits().UserMessages || l.QueueBytes != DefaultLimits().QueueBytes {
		t.Errorf("defaults not kept: %+v", l)
	}
	if len(l.TrustedProxies) != 2 || !l.TrustedProxies[1].Contains(netip.MustParseAddr("192.0.2.1")) {
		t.Errorf("trusted proxies = %v", l.TrustedProxies)
	}
	if strings.Join(l.AllowedOrigins, " ") != "app.example.com *.example.org" {
		t.Errorf("allowed origins = %q", l.AllowedOrigins)
	}

	var off Limits
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	off.RegisterFlags(fs)
	if err := fs.Parse([]string{"-limits-off"}); err != nil {
		t.Fatal(err)
	}
	off.defaults()
	if !off.ConnMessages.Off || !off.Blocks.Off || off.ConnsPerUser != -1 || off.ConnsPerIP != -1 {
		t.Errorf("-limits-off left limits on: %+v", off)
	}
	if off.Handshakes != DefaultHandshakes() || off.ResumeConcurrency != DefaultResumeConcurrency {
		t.Errorf("-limits-off changed the capacity bounds: %+v", off)
	}
	if off.QueueBytes != DefaultLimits().QueueBytes || off.MaxOutstanding != DefaultLimits().MaxOutstanding {
		t.Errorf("-limits-off changed the bounds: %+v", off)
	}
}

func TestClientIP(t *testing.T) {
	l := &limiter{cfg: Limits{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	for _, tc := range []struct {
		name, peer, xff, want string
	}{
		{"direct", "192.0.2.7:5000", "", "192.0.2.7"},
		{"an untrusted peer's header is ignored", "192.0.2.7:5000", "198.51.100.1", "192.0.2.7"},
		{"through a trusted proxy", "10.1.2.3:5000", "198.51.100.1", "198.51.100.1"},
		{"a client-written hop before the proxy's is ignored", "10.1.2.3:5000", "203.0.113.9, 198.51.100.1", "198.51.100.1"},
		{"through two trusted proxies", "10.1.2.3:5000", "198.51.100.1, 10.9.9.9", "198.51.100.1"},
		{"malformed hop", "10.1.2.3:5000", "junk", "10.1.2.3"},
		{"mapped peer", "[::ffff:192.0.2.7]:5000", "", "192.0.2.7"},
	} {
		r := httptest.NewRequest("GET", "/ws", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := l.clientIP(r); got.String() != tc.want {
			t.Errorf("%s: clientIP = %v, want %s", tc.name, got, tc.want)
		}
	}
}

// limitedConn is a conn with the limits of cfg, joined as user u on svc.
func limitedConn(t *testing.T, svc *Service, user string) *conn {
	t.Helper()
	c := &conn{svc: svc, user: user, lim: connLimits{}}
	if refused := c.joinUser(user); refused != nil {
		t.Fatalf("join %s: %v", user, refused)
	}
	return c
}

func limitedService(cfg Limits) *Service {
	cfg.defaults()
	return &Service{lim: newLimiter(cfg, metrics.NewRegistry())}
}

func sendFrame(id string) *clientv1.ClientFrame {
	return &clientv1.ClientFrame{RequestId: id, Frame: &clientv1.ClientFrame_SendMessage{SendMessage: &clientv1.SendMessage{ConversationId: "c", ClientMsgId: id, Text: "x"}}}
}

func pingFrame() *clientv1.ClientFrame {
	return &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}}
}

func wantLimited(t *testing.T, f *clientv1.ServerFrame, what string) {
	t.Helper()
	e := f.GetError()
	if e.GetCode() != chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED || e.GetRetryAfterMs() == 0 {
		t.Fatalf("%s: got %v, want RATE_LIMITED with retry_after_ms", what, f)
	}
}

// TestAdmitBuckets: past a connection's message burst its messages are
// refused with a retry-after that covers the refill, while its other
// frames and another user's messages pass; the user's bucket spans the
// user's connections.
func TestAdmitBuckets(t *testing.T) {
	svc := limitedService(Limits{
		ConnMessages: Rate{Events: 1, Per: time.Hour, Burst: 3},
		UserMessages: Rate{Events: 1, Per: time.Hour, Burst: 5},
	})
	a := limitedConn(t, svc, "alice")
	for i := range 3 {
		if f := a.admit(sendFrame("m")); f != nil {
			t.Fatalf("send %d within the burst refused: %v", i, f)
		}
	}
	f := a.admit(sendFrame("m"))
	wantLimited(t, f, "fourth send")
	if got := time.Duration(f.GetError().GetRetryAfterMs()) * time.Millisecond; got < 59*time.Minute || got > 91*time.Minute {
		t.Errorf("retry after %v, want about an hour (one token at 1/h), jittered by at most half", got)
	}
	if f := a.admit(pingFrame()); f != nil {
		t.Errorf("a ping was refused with the message bucket empty: %v", f)
	}
	if f := limitedConn(t, svc, "bob").admit(sendFrame("m")); f != nil {
		t.Errorf("another user's send refused: %v", f)
	}
	// alice's second connection has its own burst of 3 but shares her 5.
	a2 := limitedConn(t, svc, "alice")
	for i := range 2 {
		if f := a2.admit(sendFrame("m")); f != nil {
			t.Fatalf("second connection's send %d refused: %v", i, f)
		}
	}
	wantLimited(t, a2.admit(sendFrame("m")), "alice's sixth send")
	if n := svc.lim.refused[limitConnMessages].Load(); n != 1 {
		t.Errorf("conn_messages refusals = %d, want 1", n)
	}
	if n := svc.lim.refused[limitUserMessages].Load(); n != 1 {
		t.Errorf("user_messages refusals = %d, want 1", n)
	}
}

func TestAdmitGroupsAndBlocks(t *testing.T) {
	svc := limitedService(Limits{GroupOps: Rate{Events: 1, Per: time.Hour, Burst: 2}, Blocks: Rate{Events: 1, Per: time.Hour, Burst: 1}})
	c := limitedConn(t, svc, "alice")
	group := &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_CreateConversation{CreateConversation: &clientv1.CreateConversation{}}}
	add := &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_AddMember{AddMember: &clientv1.AddMember{ConversationId: "g", UserId: "x"}}}
	block := &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_BlockUser{BlockUser: &clientv1.BlockUser{UserId: "x"}}}
	if c.admit(group) != nil || c.admit(add) != nil {
		t.Fatal("group operations within the burst refused")
	}
	wantLimited(t, c.admit(add), "third group operation")
	// A contact request reaches out to someone as an add does: the same
	// bucket.
	wantLimited(t, c.admit(&clientv1.ClientFrame{Frame: &clientv1.ClientFrame_RequestContact{RequestContact: &clientv1.RequestContact{UserId: "x"}}}), "contact request after two group operations")
	if c.admit(block) != nil {
		t.Fatal("first block refused")
	}
	wantLimited(t, c.admit(block), "second block")
	// Reconnecting does not refill a user's buckets.
	c.releaseLimits()
	svc.lim.sweep(time.Now())
	wantLimited(t, limitedConn(t, svc, "alice").admit(block), "block after reconnecting")
}

func TestAdmitBounds(t *testing.T) {
	c := limitedConn(t, limitedService(Limits{}), "alice")
	long := &clientv1.ClientFrame{RequestId: strings.Repeat("r", MaxRequestIDBytes+1), Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}}
	if f := c.admit(long); f.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || long.GetRequestId() != "" {
		t.Errorf("long request id: %v (id now %q), want INVALID_ARGUMENT answered without the id", f, long.GetRequestId())
	}
	ok := &clientv1.ClientFrame{RequestId: strings.Repeat("r", MaxRequestIDBytes), Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}}
	if f := c.admit(ok); f != nil {
		t.Errorf("request id of %d bytes refused: %v", MaxRequestIDBytes, f)
	}
	hist := &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_GetHistory{GetHistory: &clientv1.GetHistory{ConversationId: strings.Repeat("c", MaxConversationIDBytes+1)}}}
	if f := c.admit(hist); f.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Errorf("long conversation id: %v, want INVALID_ARGUMENT", f)
	}
}

func TestConnsPerUserAndSweep(t *testing.T) {
	svc := limitedService(Limits{ConnsPerUser: 2})
	a, b := limitedConn(t, svc, "alice"), limitedConn(t, svc, "alice")
	third := &conn{svc: svc, lim: connLimits{}}
	wantLimited(t, third.joinUser("alice"), "third connection")
	a.releaseLimits()
	limitedConn(t, svc, "alice").releaseLimits()
	b.releaseLimits()
	svc.lim.sweep(time.Now())
	if n := len(svc.lim.users); n != 0 {
		t.Errorf("%d users kept after their last connection, with full buckets", n)
	}
}

func TestConnsPerIP(t *testing.T) {
	svc := limitedService(Limits{ConnsPerIP: 2})
	ip := netip.MustParseAddr("192.0.2.1")
	if !svc.lim.acquireIP(ip) || !svc.lim.acquireIP(ip) {
		t.Fatal("connections within the cap refused")
	}
	if svc.lim.acquireIP(ip) {
		t.Fatal("third connection from one address accepted")
	}
	if !svc.lim.acquireIP(netip.MustParseAddr("192.0.2.2")) {
		t.Fatal("another address refused")
	}
	svc.lim.releaseIP(ip)
	if !svc.lim.acquireIP(ip) {
		t.Fatal("a released place was not given again")
	}
}

func TestDedupeCursors(t *testing.T) {
	in := []*clientv1.Cursor{{ConversationId: "a", LastSeq: 1}, {ConversationId: "b"}, {ConversationId: "a", LastSeq: 9}}
	out := dedupeCursors(in)
	if len(out) != 2 || out[0].GetLastSeq() != 1 || out[1].GetConversationId() != "b" {
		t.Errorf("dedupe = %v", out)
	}
}

// TestQueueBoundInBytes: events past QueueBytes close the connection with
// resync, though far fewer than QueueLimit items are queued.
func TestQueueBoundInBytes(t *testing.T) {
	c, client := pair(t, 1024)
	c.svc.lim.cfg.QueueBytes = 64 << 10
	big := strings.Repeat("x", 8<<10)
	c.mu.Lock()
	c.writing = true // hold the writer off: everything stays queued
	c.mu.Unlock()
	pushed := 0
	for i := range 100 {
		if !c.push(&chatv1.Event{ConversationId: "c", Seq: uint64(i + 1), Body: &chatv1.Event_MessagePosted{MessagePosted: &chatv1.MessagePosted{Text: big}}}) {
			break
		}
		pushed++
	}
	if pushed == 0 || pushed >= 10 {
		t.Fatalf("%d events of 8 KiB queued under a 64 KiB bound", pushed)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if !closed {
		t.Fatal("the connection lives on past its byte bound")
	}
	go c.ws.Close(CloseResync, "resync")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := client.Read(ctx); websocket.CloseStatus(err) != CloseResync {
		t.Fatalf("client read %v, want close 4000", err)
	}
}

// TestOutstandingPausesReading: with MaxOutstanding answers unwritten the
// read loop waits; one written answer lets it go on.
func TestOutstandingPausesReading(t *testing.T) {
	c, _ := pair(t, 1024)
	c.lim.room = make(chan struct{}, 1)
	c.svc.lim.cfg.MaxOutstanding = 2
	c.mu.Lock()
	c.writing = true // hold the writer off
	c.mu.Unlock()
	c.answer(pong())
	c.answer(pong())
	resumed := make(chan bool, 1)
	go func() { resumed <- c.awaitRoom() }()
	select {
	case <-resumed:
		t.Fatal("read loop went on with MaxOutstanding answers unwritten")
	case <-time.After(100 * time.Millisecond):
	}
	c.mu.Lock()
	size := c.queue[0].size
	c.mu.Unlock()
	c.answered(size)
	select {
	case ok := <-resumed:
		if !ok {
			t.Fatal("awaitRoom reported the connection closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read loop still paused after an answer was written")
	}
	if n := c.svc.lim.paused.Load(); n != 1 {
		t.Errorf("paused counter = %d, want 1", n)
	}
}

// TestAdmitChargesEveryFrame: frames refused for their bounds, and frames
// that did not decode, still take from the request buckets.
func TestAdmitChargesEveryFrame(t *testing.T) {
	c := limitedConn(t, limitedService(Limits{ConnRequests: Rate{Events: 1, Per: time.Hour, Burst: 3}}), "alice")
	long := &clientv1.ClientFrame{RequestId: strings.Repeat("r", MaxRequestIDBytes+1), Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}}
	if f := c.admit(long); f.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("long request id: %v", f)
	}
	if f := c.admitBad(); f != nil {
		t.Fatalf("undecodable frame within the burst refused: %v", f)
	}
	if f := c.admit(pingFrame()); f != nil {
		t.Fatalf("third frame within the burst refused: %v", f)
	}
	wantLimited(t, c.admitBad(), "undecodable frame past the burst")
	wantLimited(t, c.admit(pingFrame()), "ping past the burst")
}

// TestHeedAfterRefusals: past three refusals in a row the read loop waits
// for the refusing bucket; an admitted frame ends that.
func TestHeedAfterRefusals(t *testing.T) {
	svc := limitedService(Limits{ConnMessages: Rate{Events: 1, Per: time.Hour, Burst: 1}})
	c := limitedConn(t, svc, "alice")
	c.admit(sendFrame("m"))
	for range floodRefusals {
		wantLimited(t, c.admit(sendFrame("m")), "send past the burst")
	}
	if c.lim.refusals != floodRefusals || time.Until(time.Unix(0, c.lim.quietUntil)) < 59*time.Minute {
		t.Fatalf("after %d refusals: refusals %d, quiet for %v", floodRefusals, c.lim.refusals, time.Until(time.Unix(0, c.lim.quietUntil)))
	}
	// The wait is capped so pongs are still read: heed returns.
	c.heed()
	if n := svc.lim.heeded.Load(); n != 1 {
		t.Fatalf("heeded = %d, want 1", n)
	}
	if f := c.admit(pingFrame()); f != nil || c.lim.refusals != 0 {
		t.Fatalf("a ping after the refusals: %v, refusals %d; want admitted and the count reset", f, c.lim.refusals)
	}
	c.heed()
	if n := svc.lim.heeded.Load(); n != 1 {
		t.Fatalf("heeded = %d after an admitted frame, want still 1", n)
	}
}

// TestKeepaliveLeavesBusyConnectionsAlone: the keepalive pings neither a
// connection being written to nor a closing one, but does ping one a
// batch was just written to. Skipping those too (9d22c73) left a client
// that only receives unpinged while messages flowed to it, and the idle
// timeout closed it with 4008 as it read (TestLimitsAtTheEdge/flood,
// CI of 672b855).
func TestKeepaliveLeavesBusyConnectionsAlone(t *testing.T) {
	c, _ := pair(t, 64)
	if !c.needsPing() {
		t.Fatal("an idle connection never written to is not pinged")
	}
	c.mu.Lock()
	c.writing = true
	c.mu.Unlock()
	if c.needsPing() {
		t.Fatal("a connection being written to is pinged")
	}
	c.mu.Lock()
	c.writing, c.closed = false, true
	c.mu.Unlock()
	if c.needsPing() {
		t.Fatal("a closing connection is pinged")
	}
	c.mu.Lock()
	c.closed = false
	c.mu.Unlock()
	if !c.push(&chatv1.Event{ConversationId: "c", Seq: 1}) {
		t.Fatal("push refused")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		writing := c.writing
		c.mu.Unlock()
		if !writing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer never finished its batch")
		}
		time.Sleep(time.Millisecond)
	}
	if !c.needsPing() {
		t.Fatal("a connection written to just now is not pinged: a receive-only client would be closed as idle")
	}
}

// TestResumeTurns: at most ResumeConcurrency resumes run at once; the
// next waits for one to end, and one that waited past its bound goes
// ahead anyway rather than starve.
func TestResumeTurns(t *testing.T) {
	l := newLimiter(Limits{ResumeConcurrency: 2}, metrics.NewRegistry())
	end1, end2 := l.resumeTurn(time.Second), l.resumeTurn(time.Second)
	got := make(chan func(), 1)
	go func() { got <- l.resumeTurn(time.Minute) }()
	select {
	case <-got:
		t.Fatal("a third resume ran beside two")
	case <-time.After(100 * time.Millisecond):
	}
	end1()
	select {
	case end3 := <-got:
		end3()
	case <-time.After(5 * time.Second):
		t.Fatal("the third resume did not get the turn the first ended")
	}
	end4 := l.resumeTurn(time.Second) // the third's turn is back
	start := time.Now()
	end5 := l.resumeTurn(200 * time.Millisecond)
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("a resume past the bound waited %v, want its 200 ms", waited)
	}
	end2()
	end4()
	end5() // ends nothing: it never held a turn
	if n := len(l.resumes); n != 0 {
		t.Fatalf("%d turns held after every resume ended", n)
	}
	if unbounded := newLimiter(Limits{ResumeConcurrency: -1}, metrics.NewRegistry()); unbounded.resumes != nil {
		t.Fatal("-1 bounded the resumes")
	}
}

func TestHandshakeTurns(t *testing.T) {
	ctx := context.Background()
	l := newLimiter(Limits{Handshakes: Rate{Events: 10, Per: time.Second, Burst: 1}, HandshakeWait: time.Second}, metrics.NewRegistry())
	if wait := l.handshakeTurn(ctx); wait != 0 {
		t.Fatalf("the first handshake was refused for %v", wait)
	}
	start := time.Now()
	if wait := l.handshakeTurn(ctx); wait != 0 {
		t.Fatalf("a handshake within the wait was refused for %v", wait)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("the second handshake went ahead after %v, want about its 100 ms turn", waited)
	}

	short := newLimiter(Limits{Handshakes: Rate{Events: 1, Per: time.Minute, Burst: 1}, HandshakeWait: 10 * time.Millisecond}, metrics.NewRegistry())
	short.handshakeTurn(ctx)
	if wait := short.handshakeTurn(ctx); wait < 50*time.Second {
		t.Fatalf("a handshake a minute from its turn was told to come back in %v", wait)
	}
	if n := short.refused[limitHandshakes].Load(); n != 1 {
		t.Fatalf("%d refusals counted, want 1", n)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	waiting := newLimiter(Limits{Handshakes: Rate{Events: 1, Per: time.Minute, Burst: 1}, HandshakeWait: time.Hour}, metrics.NewRegistry())
	waiting.handshakeTurn(ctx)
	if wait := waiting.handshakeTurn(gone); wait == 0 {
		t.Fatal("a client that left was let in")
	}
	if none := newLimiter(Limits{Handshakes: Rate{Events: 1, Per: time.Second, Burst: 0}}, metrics.NewRegistry()); none.handshakeTurn(ctx) == 0 {
		t.Fatal("a burst of 0 let a handshake in")
	}
	if off := newLimiter(Limits{Handshakes: Rate{Off: true}}, metrics.NewRegistry()); off.handshakeTurn(ctx) != 0 || off.handshakeTurn(ctx) != 0 {
		t.Fatal("handshakes paced with the pace off")
	}
}

func TestRefuseBusySpreadsRetries(t *testing.T) {
	for _, tc := range []struct {
		wait     time.Duration
		min, max int
	}{{time.Second, 1, 2}, {2500 * time.Millisecond, 3, 6}, {rate.InfDuration, 3600, 7200}} {
		seen := map[int]bool{}
		for range 200 {
			w := httptest.NewRecorder()
			refuseBusy(w, tc.wait)
			if w.Code != http.StatusServiceUnavailable {
				t.Fatalf("refusal answered %d", w.Code)
			}
			after, err := strconv.Atoi(w.Header().Get("Retry-After"))
			if err != nil || after < tc.min || after > tc.max {
				t.Fatalf("wait %v: Retry-After %q, want %d-%d s", tc.wait, w.Header().Get("Retry-After"), tc.min, tc.max)
			}
			seen[after] = true
		}
		if len(seen) < 2 {
			t.Fatalf("wait %v: every refusal said the same Retry-After %v: the clients would come back together", tc.wait, seen)
		}
	}
}

// TestTokenClockArmsNearItsTick: a token far from its warning leaves the
// connection without a timer (about 150 bytes an idle connection need
// not hold); the keepalive's sweep arms it within two sweeps of the
// tick, and a refresh that moves the expiry far away again drops it.
func TestTokenClockArmsNearItsTick(t *testing.T) {
	c, _ := pair(t, 64)
	c.svc.cfg.TokenWarning = time.Minute
	now := time.Now()
	c.startTokenClock(now.Add(time.Hour))
	c.mu.Lock()
	armed := c.token.timer != nil
	c.mu.Unlock()
	if armed {
		t.Fatal("a clock an hour from its expiry holds a timer")
	}
	// Two sweeps (2 × PingInterval, 60 s) before the warning is due.
	c.sweepTokenClock(now.Add(58 * time.Minute))
	c.mu.Lock()
	armed = c.token.timer != nil
	c.mu.Unlock()
	if !armed {
		t.Fatal("the sweep did not arm a clock whose warning is due within two sweeps")
	}
	c.extendToken(now.Add(2 * time.Hour))
	c.mu.Lock()
	armed = c.token.timer != nil
	c.mu.Unlock()
	if armed {
		t.Fatal("a refresh to a far expiry kept the timer")
	}
	c.stopTokenClock()
}
