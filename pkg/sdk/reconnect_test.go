package sdk

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// wait bounds every wait in these tests; none of them is a way to let
// time pass.
const wait = 10 * time.Second

// fast reconnects at once, so a test waits on events, not on backoff.
func fast() *ReconnectPolicy {
	return &ReconnectPolicy{MinDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, KeepAlive: -1}
}

func dialFake(t *testing.T, e *fakeEdge, o Options) *Client {
	t.Helper()
	o.URL = e.url()
	if o.Token == "" && o.TokenFunc == nil {
		o.Token = "ok:alice"
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := Dial(ctx, o)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func accept(t *testing.T, e *fakeEdge) *fakeConn {
	t.Helper()
	select {
	case fc := <-e.accepted:
		return fc
	case <-time.After(wait):
		t.Fatal("no connection reached the edge")
		return nil
	}
}

// expect reads the next events and requires exactly seqs from..to of conv.
func expect(t *testing.T, c *Client, conv string, from, to uint64) {
	t.Helper()
	for s := from; s <= to; s++ {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("events closed before %s/%d: %v", conv, s, c.Err())
			}
			if ev.GetConversationId() != conv || ev.GetSeq() != s {
				t.Fatalf("got %s/%d, want %s/%d", ev.GetConversationId(), ev.GetSeq(), conv, s)
			}
		case <-time.After(wait):
			t.Fatalf("no event %s/%d", conv, s)
		}
	}
}

// waitState reads state changes until one in want, and returns it.
func waitState(t *testing.T, c *Client, want ...State) StateChange {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case s := <-c.States():
			if slices.Contains(want, s.State) {
				return s
			}
		case <-timeout:
			t.Fatalf("no state change to %v", want)
		}
	}
}

func waitDone(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("client not done")
	}
}

func cursorsOf(a *clientv1.Authenticate) map[string]uint64 {
	m := map[string]uint64{}
	for _, cur := range a.GetResume() {
		m[cur.GetConversationId()] = cur.GetLastSeq()
	}
	return m
}

// TestReconnectResumesFromWhatTheAppRead cuts the connection three ways
// (network error, the edge's 4000 resync close, its 1001 going away, its
// 4002 reconnect elsewhere while it drains) while events flow. Each time the client redials by itself
// under the same device id with cursors at exactly the last event the app
// read, and Events() goes on with the next one: nothing twice, nothing
// missing, even when the edge pushes some again.
func TestReconnectResumesFromWhatTheAppRead(t *testing.T) {
	e := newFakeEdge(t)
	c := dialFake(t, e, Options{Reconnect: fast(), Resume: []*clientv1.Cursor{{ConversationId: "other", LastSeq: 0}}})
	if c.DeviceID != "server-chosen-device" {
		t.Fatalf("device %q", c.DeviceID)
	}
	fc := accept(t, e)
	if s := waitState(t, c, StateConnected); s.SessionID == "" {
		t.Fatal("connected without a session")
	}
	cuts := []struct {
		name string
		cut  func(*fakeConn)
		code websocket.StatusCode
	}{
		{"network error", func(fc *fakeConn) { fc.ws.CloseNow() }, -1},
		{"resync close", func(fc *fakeConn) { fc.ws.Close(4000, "resync") }, 4000},
		{"edge restart", func(fc *fakeConn) { fc.ws.Close(websocket.StatusGoingAway, "shutting down") }, websocket.StatusGoingAway},
		{"edge drain", func(fc *fakeConn) { fc.ws.Close(4002, "draining: reconnect elsewhere") }, 4002},
	}
	read := uint64(0)
	for _, cut := range cuts {
		t.Run(cut.name, func(t *testing.T) {
			e.publish("c1", 5)
			// The app reads three; two stay unread in the client.
			expect(t, c, "c1", read+1, read+3)
			read += 3
			cut.cut(fc)
			s := waitState(t, c, StateReconnecting)
			if got := websocket.CloseStatus(s.Err); got != cut.code {
				t.Fatalf("reconnecting after %v (code %d), want code %d", s.Err, got, cut.code)
			}
			// Sent while nobody was connected.
			e.record("c1", 2)
			fc = accept(t, e)
			if fc.auth.GetDeviceId() != c.DeviceID || fc.auth.GetToken() != "ok:alice" {
				t.Fatalf("redial authenticated as %v", fc.auth)
			}
			// The cursor is the last event the app took from Events():
			// the deliverer records it just after the hand-over, so the
			// redial may have caught it a step before.
			got := cursorsOf(fc.auth)
			if len(got) != 2 || got["other"] != 0 || got["c1"] > read || got["c1"] < read-1 {
				t.Fatalf("resume cursors %v, want c1 at %d and other at 0", got, read)
			}
			waitState(t, c, StateConnected)
			r := waitState(t, c, StateResumed).Resumed
			if len(r.GetCaughtUp()) != 2 {
				t.Fatalf("resumed %v", r)
			}
			// A fan-out replay pushes the newest two again, then a new one.
			e.repush("c1", read+3, read+4)
			e.publish("c1", 1)
			expect(t, c, "c1", read+1, read+5)
			read += 5
		})
	}
	// Nothing was delivered twice: the next event is the next seq.
	e.publish("c1", 1)
	expect(t, c, "c1", read+1, read+1)
}

// TestRequestInFlightFailsWithConnectionLost: a send whose answer is lost
// with its connection fails with ErrConnectionLost; retried with the same
// client message id after the reconnect, it gets the original seq.
func TestRequestInFlightFailsWithConnectionLost(t *testing.T) {
	e := newFakeEdge(t)
	c := dialFake(t, e, Options{Reconnect: fast()})
	fc := accept(t, e)
	// The edge takes the message, then the connection dies before the
	// answer leaves.
	taken := make(chan struct{})
	e.setHook(func(fc *fakeConn, f *clientv1.ClientFrame) bool {
		if f.GetSendMessage() == nil {
			return false
		}
		e.send("alice", f.GetSendMessage())
		close(taken)
		fc.ws.CloseNow()
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := c.SendWithID(ctx, "c1", "m1", "hello")
	<-taken
	if !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("send during the cut: %v, want ErrConnectionLost", err)
	}
	e.setHook(nil)
	// The retry waits for the next connection and lands once.
	acc, err := c.SendWithID(ctx, "c1", "m1", "hello")
	if err != nil || !acc.GetDuplicate() || acc.GetSeq() != 1 {
		t.Fatalf("retry = %v, %v; want the original seq 1, duplicate", acc, err)
	}
	if fc2 := accept(t, e); fc2 == fc {
		t.Fatal("same connection")
	}
	// Its event left before the connection died, and comes once.
	e.publish("c1", 1)
	expect(t, c, "c1", 1, 2)
}

// TestCloseStopsReconnecting: Close during the backoff and Close during a
// dial both end the client at once, and nothing dials after it.
func TestCloseStopsReconnecting(t *testing.T) {
	t.Run("during the backoff", func(t *testing.T) {
		e := newFakeEdge(t)
		c := dialFake(t, e, Options{Reconnect: &ReconnectPolicy{MinDelay: time.Hour, KeepAlive: -1}})
		accept(t, e).ws.CloseNow()
		if s := waitState(t, c, StateReconnecting); s.Delay < 30*time.Minute {
			t.Fatalf("backoff %v, want about an hour", s.Delay)
		}
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(wait):
			t.Fatal("Close waits for the backoff")
		}
		waitDone(t, c)
		if !errors.Is(c.Err(), ErrClosed) {
			t.Fatalf("err %v", c.Err())
		}
		if s := waitState(t, c, StateClosed); !errors.Is(s.Err, ErrClosed) {
			t.Fatalf("closed with %v", s.Err)
		}
		if n := e.dials.Load(); n != 1 {
			t.Fatalf("%d dials", n)
		}
		if _, err := c.Send(context.Background(), "c1", "x"); !errors.Is(err, ErrClosed) {
			t.Fatalf("send after close: %v", err)
		}
	})
	t.Run("during a dial", func(t *testing.T) {
		e := newFakeEdge(t)
		c := dialFake(t, e, Options{Reconnect: fast()})
		fc := accept(t, e)
		e.mu.Lock()
		e.gate = make(chan struct{}) // the next handshake hangs
		e.mu.Unlock()
		fc.ws.CloseNow()
		waitState(t, c, StateReconnecting)
		for n := int32(0); n < 2; {
			select {
			case n = <-e.dialed:
			case <-time.After(wait):
				t.Fatal("no redial")
			}
		}
		// The redial hangs in the handshake.
		c.Close()
		waitDone(t, c)
		if !errors.Is(c.Err(), ErrClosed) {
			t.Fatalf("err %v", c.Err())
		}
	})
}

// TestRejectedTokenEndsTheClient: a token the edge refuses on a redial
// ends the client with ErrAuthRejected instead of looping; a token func
// gets one more try (its token may have expired in flight), and can
// recover.
func TestRejectedTokenEndsTheClient(t *testing.T) {
	t.Run("static token", func(t *testing.T) {
		e := newFakeEdge(t)
		c := dialFake(t, e, Options{Reconnect: fast(), Token: "ok:alice"})
		fc := accept(t, e)
		e.mu.Lock()
		e.revoked["ok:alice"] = true
		e.mu.Unlock()
		fc.ws.CloseNow()
		waitDone(t, c)
		var we *wire.Error
		if err := c.Err(); !errors.Is(err, ErrAuthRejected) || !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
			t.Fatalf("err = %v, want ErrAuthRejected with UNAUTHENTICATED", err)
		}
		if n := e.dials.Load(); n != 2 {
			t.Fatalf("%d dials, want the first and one redial", n)
		}
		if st := waitState(t, c, StateClosed); !errors.Is(st.Err, ErrAuthRejected) {
			t.Fatalf("closed with %v", st.Err)
		}
	})
	t.Run("token func keeps failing", func(t *testing.T) {
		e := newFakeEdge(t)
		var calls atomic.Int32
		c := dialFake(t, e, Options{Reconnect: fast(), TokenFunc: func(context.Context) (string, error) {
			if calls.Add(1) == 1 {
				return "ok:alice", nil
			}
			return "expired", nil
		}})
		accept(t, e).ws.CloseNow()
		waitDone(t, c)
		var we *wire.Error
		if err := c.Err(); !errors.Is(err, ErrAuthRejected) || !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED {
			t.Fatalf("err = %v, want ErrAuthRejected with TOKEN_EXPIRED", err)
		}
		if n := calls.Load(); n != 3 {
			t.Fatalf("token func called %d times, want 3", n)
		}
		if _, ok := <-c.Events(); ok {
			t.Fatal("events still open")
		}
	})
	t.Run("token func recovers", func(t *testing.T) {
		e := newFakeEdge(t)
		var calls atomic.Int32
		c := dialFake(t, e, Options{Reconnect: fast(), TokenFunc: func(context.Context) (string, error) {
			if calls.Add(1) == 2 {
				return "expired", nil
			}
			return "ok:alice", nil
		}})
		accept(t, e).ws.CloseNow()
		fc := accept(t, e)
		if fc.auth.GetToken() != "ok:alice" || calls.Load() != 3 {
			t.Fatalf("reconnected with %q after %d calls", fc.auth.GetToken(), calls.Load())
		}
		if err := c.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("someone else's token", func(t *testing.T) {
		e := newFakeEdge(t)
		var calls atomic.Int32
		c := dialFake(t, e, Options{Reconnect: fast(), TokenFunc: func(context.Context) (string, error) {
			if calls.Add(1) == 1 {
				return "ok:alice", nil
			}
			return "ok:mallory", nil
		}})
		accept(t, e).ws.CloseNow()
		waitDone(t, c)
		if n := e.dials.Load(); n != 2 {
			t.Fatalf("%d dials", n)
		}
		if err := c.Err(); err == nil || !strings.Contains(err.Error(), "someone else's") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestUnreadEventsDoNotHoldAnswers: events the app has not read never
// delay an answer; past EventBuffer the client drops the connection,
// waits for the app to read half of what it holds, and resumes from the
// last event read, losing nothing.
func TestUnreadEventsDoNotHoldAnswers(t *testing.T) {
	e := newFakeEdge(t)
	c := dialFake(t, e, Options{Reconnect: fast(), EventBuffer: 8})
	fc := accept(t, e)
	waitState(t, c, StateConnected)
	e.publish("c1", 7)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping with 7 events unread: %v", err)
	}
	e.publish("c1", 13)
	select {
	case <-fc.gone:
	case <-time.After(wait):
		t.Fatal("the client kept a connection it cannot keep up with")
	}
	if s := waitState(t, c, StateReconnecting); !errors.Is(s.Err, ErrEventBufferFull) {
		t.Fatalf("reconnecting because %v", s.Err)
	}
	// It does not come back while the app reads nothing (a redial would
	// only refill the buffer); the backoff is 1-5 ms, so a fifth of a
	// second of silence says it is waiting for the app.
	select {
	case <-e.accepted:
		t.Fatal("redialled while the app had read nothing")
	case <-time.After(200 * time.Millisecond):
	}
	expect(t, c, "c1", 1, 20)
	fc = accept(t, e)
	if got := cursorsOf(fc.auth)["c1"]; got < 1 {
		t.Fatalf("redialled with cursor %d before the app read anything", got)
	}
	e.publish("c1", 1)
	expect(t, c, "c1", 21, 21)
}

// TestWithoutReconnectTheClientEnds keeps the old contract when
// Reconnect is nil: the connection's end is the client's, a request in
// flight fails with ErrConnectionLost, later ones with ErrClosed, and
// Events() hands over what had arrived before it closes.
func TestWithoutReconnectTheClientEnds(t *testing.T) {
	e := newFakeEdge(t)
	c := dialFake(t, e, Options{})
	fc := accept(t, e)
	e.publish("c1", 3)
	hung := make(chan struct{})
	e.setHook(func(fc *fakeConn, f *clientv1.ClientFrame) bool {
		close(hung)
		return true
	})
	errc := make(chan error, 1)
	go func() { errc <- c.Ping(context.Background()) }()
	<-hung
	fc.ws.Close(4000, "resync")
	if err := <-errc; !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("ping in flight: %v", err)
	}
	waitDone(t, c)
	if websocket.CloseStatus(c.Err()) != 4000 {
		t.Fatalf("err %v, want the 4000 close", c.Err())
	}
	expect(t, c, "c1", 1, 3)
	if _, ok := <-c.Events(); ok {
		t.Fatal("events open after the end")
	}
	if err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("ping after the end: %v", err)
	}
	if n := e.dials.Load(); n != 1 {
		t.Fatalf("%d dials", n)
	}
}

// TestKeepAliveDropsADeadLink: a server that stops answering pings (a
// link that died without a FIN) is noticed and replaced.
func TestKeepAliveDropsADeadLink(t *testing.T) {
	e := newFakeEdge(t)
	p := fast()
	p.KeepAlive = 50 * time.Millisecond
	c := dialFake(t, e, Options{Reconnect: p})
	fc := accept(t, e)
	// The edge stops reading (so it answers no ping) once asked to.
	release := make(chan struct{})
	defer close(release)
	e.setHook(func(fc *fakeConn, f *clientv1.ClientFrame) bool {
		<-release
		return true
	})
	if err := c.WriteFrame(context.Background(), &clientv1.ClientFrame{Frame: &clientv1.ClientFrame_Ping{Ping: &clientv1.Ping{}}}); err != nil {
		t.Fatal(err)
	}
	s := waitState(t, c, StateReconnecting)
	t.Logf("dropped: %v", s.Err)
	e.setHook(nil)
	if fc2 := accept(t, e); fc2 == fc {
		t.Fatal("same connection")
	}
}

// TestGapIsFilledFromHistory: an event that skips ahead of the last one
// delivered in its conversation (events pushed while no connection was
// registered reach nobody) is preceded by the missing ones, read from
// history; events at or below Options.Resume's cursors are never
// delivered; and a gap history cannot fill is reported, not hidden.
func TestGapIsFilledFromHistory(t *testing.T) {
	e := newFakeEdge(t)
	e.record("c1", 5)
	c := dialFake(t, e, Options{Reconnect: fast(), Resume: []*clientv1.Cursor{{ConversationId: "c1", LastSeq: 2}}})
	select {
	case r := <-c.Resumed():
		if len(r.GetCaughtUp()) != 1 || r.GetCaughtUp()[0].GetLastSeq() != 5 {
			t.Fatalf("resumed %v", r)
		}
	case <-time.After(wait):
		t.Fatal("no resumed")
	}
	expect(t, c, "c1", 3, 5)
	e.record("c1", 2)
	e.repush("c1", 2, 4)
	e.publish("c1", 1)
	expect(t, c, "c1", 6, 8)

	e.mu.Lock()
	e.badConvs["c2"] = true
	e.mu.Unlock()
	e.publish("c2", 1)
	e.record("c2", 1)
	e.publish("c2", 1)
	expect(t, c, "c2", 1, 1)
	expect(t, c, "c2", 3, 3)
	select {
	case we := <-c.Errors():
		if we.Code != chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !strings.Contains(we.Message, "c2: events 2-2 missing") {
			t.Fatalf("gap reported as %v", we)
		}
	case <-time.After(wait):
		t.Fatal("the unfilled gap was not reported")
	}
}

// TestWithoutReconnectAFullBufferWaits: a client that cannot resume by
// itself does not drop its connection when the app falls behind; it stops
// reading until the app catches up (the server's queue limit decides
// whether the connection survives), and nothing is lost.
func TestWithoutReconnectAFullBufferWaits(t *testing.T) {
	e := newFakeEdge(t)
	c := dialFake(t, e, Options{EventBuffer: 2})
	accept(t, e)
	e.publish("c1", 6)
	expect(t, c, "c1", 1, 6)
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("after catching up: %v", err)
	}
	if n := e.dials.Load(); n != 1 {
		t.Fatalf("%d dials", n)
	}
}

// TestFailedResumeIsCaughtUpFromHistory: a conversation whose resume the
// server reports failed (its history was behind the log) is caught up by
// the client from history, with no live event to show the gap.
func TestFailedResumeIsCaughtUpFromHistory(t *testing.T) {
	e := newFakeEdge(t)
	e.record("c1", 4)
	e.failResume["c1"] = true
	c := dialFake(t, e, Options{Reconnect: fast(), Resume: []*clientv1.Cursor{{ConversationId: "c1", LastSeq: 1}}})
	expect(t, c, "c1", 2, 4)
	if r := <-c.Resumed(); len(r.GetFailed()) != 1 {
		t.Fatalf("resumed %v", r)
	}
	if we := <-c.Errors(); we.Code != chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE {
		t.Fatalf("error %v", we)
	}
	e.publish("c1", 1)
	expect(t, c, "c1", 5, 5)
}

// TestBackoffDoublesWithJitter: each wait is between half and all of
// MinDelay doubled per failed attempt, capped at MaxDelay, and not always
// the same.
func TestBackoffDoublesWithJitter(t *testing.T) {
	p := ReconnectPolicy{MinDelay: 100 * time.Millisecond, MaxDelay: 3 * time.Second}.withDefaults()
	for n := range 8 {
		full := min(p.MinDelay<<n, p.MaxDelay)
		seen := map[time.Duration]bool{}
		for range 50 {
			d := p.delay(n)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: wait %v outside %v..%v", n, d, full/2, full)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("attempt %d: only %d distinct waits in 50", n, len(seen))
		}
	}
}

// TestLostEventsAreNotWaitedFor: after the server's EVENTS_MISSING for a
// conversation (a resume met events lost from the log), the gap the next
// event shows is not looked for in history: the event is delivered at
// once and the error is on Errors().
func TestLostEventsAreNotWaitedFor(t *testing.T) {
	e := newFakeEdge(t)
	e.record("c1", 3)
	c := dialFake(t, e, Options{Reconnect: fast(), Resume: []*clientv1.Cursor{{ConversationId: "c1", LastSeq: 1}}})
	expect(t, c, "c1", 2, 3)
	var asked atomic.Int32
	e.setHook(func(_ *fakeConn, f *clientv1.ClientFrame) bool {
		if f.GetGetHistory().GetConversationId() == "c1" {
			asked.Add(1)
		}
		return false
	})
	e.mu.Lock()
	ev := &chatv1.Event{ConversationId: "c1", Seq: 5, SenderId: "bob"}
	e.log["c1"] = append(e.log["c1"], ev)
	for fc := range e.conns {
		fc.write(&clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Error{Error: &clientv1.Error{
			Code: chatv1.ErrorCode_ERROR_CODE_EVENTS_MISSING, Message: "resume: events 4-4 are missing from the log", ConversationId: "c1"}}})
	}
	e.pushLocked(ev)
	e.mu.Unlock()
	expect(t, c, "c1", 5, 5)
	if n := asked.Load(); n != 0 {
		t.Fatalf("asked history %d times for events the server said were lost", n)
	}
	select {
	case we := <-c.Errors():
		if we.Code != chatv1.ErrorCode_ERROR_CODE_EVENTS_MISSING {
			t.Fatalf("error %v, want EVENTS_MISSING", we)
		}
	case <-time.After(wait):
		t.Fatal("EVENTS_MISSING not reported")
	}
}
