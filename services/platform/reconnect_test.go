package platform_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/parleychat/parley/services/edge"
	"github.com/parleychat/parley/services/platform"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

// quick reconnects fast enough for a test, still through the backoff.
func quick() *sdk.ReconnectPolicy {
	return &sdk.ReconnectPolicy{MinDelay: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond}
}

// through dials user's device via the proxy, reconnecting by itself.
func (e *env) through(p *proxy, user, dev string, o sdk.Options) *sdk.Client {
	e.t.Helper()
	if o.Token == "" && o.TokenFunc == nil {
		tok, err := e.minter.Mint(user, time.Hour)
		if err != nil {
			e.t.Fatal(err)
		}
		o.Token = tok
	}
	o.URL, o.DeviceID = "ws://"+p.addr()+"/ws", dev
	if o.Reconnect == nil {
		o.Reconnect = quick()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, o)
	if err != nil {
		e.t.Fatalf("dial %s/%s through the proxy: %v", user, dev, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func hostOf(wsURL string) string {
	return strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws://"), "/ws")
}

// tally reads a client's events and checks that every conversation's
// arrive contiguous from seq 1, once each.
type tally struct {
	t    *testing.T
	name string
	mu   sync.Mutex
	last map[string]uint64
	n    int
	// moved has a token after every event.
	moved chan struct{}
}

func newTally(t *testing.T, name string, c *sdk.Client) *tally {
	ta := &tally{t: t, name: name, last: map[string]uint64{}, moved: make(chan struct{}, 1)}
	go func() {
		for ev := range c.Events() {
			ta.add(ev)
		}
	}()
	return ta
}

func (ta *tally) add(ev *chatv1.Event) {
	ta.mu.Lock()
	conv := ev.GetConversationId()
	if want := ta.last[conv] + 1; ev.GetSeq() != want {
		ta.t.Errorf("%s: %s seq %d, want %d (a gap, a duplicate or out of order)", ta.name, conv, ev.GetSeq(), want)
	}
	ta.last[conv] = max(ta.last[conv], ev.GetSeq())
	ta.n++
	ta.mu.Unlock()
	select {
	case ta.moved <- struct{}{}:
	default:
	}
}

func (ta *tally) count() int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.n
}

// waitFor waits until cond holds over (last, n).
func (ta *tally) waitFor(what string, cond func(last map[string]uint64, n int) bool) {
	ta.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		ta.mu.Lock()
		ok := cond(ta.last, ta.n)
		n := ta.n
		ta.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ta.moved:
		case <-timeout:
			ta.t.Fatalf("%s: not %s after 60 s (%d events)", ta.name, what, n)
		}
	}
}

// sender posts to convs in turn and records the highest accepted seq of
// each.
type sender struct {
	mu   sync.Mutex
	last map[string]uint64
	sent int
	// progress has a token after every accepted message.
	progress chan struct{}
}

func send(t *testing.T, ctx context.Context, c *sdk.Client, convs []string, n int) (*sender, chan error) {
	s := &sender{last: map[string]uint64{}, progress: make(chan struct{}, 1)}
	done := make(chan error, 1)
	go func() {
		for i := range n {
			conv := convs[i%len(convs)]
			acc, err := c.Send(ctx, conv, fmt.Sprintf("message %d", i))
			if err != nil {
				done <- fmt.Errorf("send %d: %w", i, err)
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
		done <- nil
	}()
	return s, done
}

func (s *sender) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

func (s *sender) waitSent(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for s.count() < n {
		select {
		case <-s.progress:
		case <-timeout:
			t.Fatalf("only %d messages sent after 60 s, want %d", s.count(), n)
		}
	}
}

// drain counts what c's States() reported so far.
func drain(c *sdk.Client) map[sdk.State]int {
	seen := map[sdk.State]int{}
	for {
		select {
		case s := <-c.States():
			seen[s.State]++
		default:
			return seen
		}
	}
}

// TestDeviceReconnectsByItself cuts bob's connection three times while
// alice posts 240 messages into two groups, once keeping him away while
// 40 of them are sent. With Options.Reconnect the SDK redials, resumes
// from the last event it delivered, and bob's Events() carries every
// event of both conversations exactly once and in order, the app doing
// nothing. Rate limits are off: alice sends 240 messages as fast as she
// can, 48 s at the default 5 a second, while bob's quick redials overflow
// his States() buffer during the 40 he is kept away for.
func TestDeviceReconnectsByItself(t *testing.T) {
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), Limits: edge.Limits{Off: true}})
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := newProxy(t, hostOf(e.url))

	bob := e.through(p, "bob", "bob-phone", sdk.Options{})
	got := newTally(t, "bob", bob)
	alice := e.dial("alice", "alice-1", false)
	newTally(t, "alice", alice.Client) // alice is a member too: her pushes are read
	var convs []string
	for _, title := range []string{"a", "b"} {
		acc, err := alice.CreateGroup(ctx, title, "bob")
		if err != nil {
			t.Fatal(err)
		}
		convs = append(convs, acc.GetConversationId())
	}

	const n = 240
	s, sent := send(t, ctx, alice.Client, convs, n)
	atLeast := func(k int) func(map[string]uint64, int) bool {
		return func(_ map[string]uint64, n int) bool { return n >= k }
	}
	got.waitFor("40 events in", atLeast(40))
	p.sever()

	got.waitFor("100 events in", atLeast(100))
	p.setRefuse(true)
	p.sever()
	away := s.count()
	s.waitSent(t, away+40)
	p.setRefuse(false)

	got.waitFor("180 events in", atLeast(180))
	p.sever()

	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	want := s.last
	s.mu.Unlock()
	got.waitFor("caught up with every message", func(last map[string]uint64, _ int) bool {
		for conv, seq := range want {
			if last[conv] < seq {
				return false
			}
		}
		return true
	})
	if k := got.count(); k != n+len(convs) {
		t.Fatalf("bob got %d events, want %d", k, n+len(convs))
	}
	seen := drain(bob)
	if seen[sdk.StateReconnecting] < 3 || seen[sdk.StateConnected] < 4 || seen[sdk.StateResumed] < 3 {
		t.Fatalf("state changes %v: want at least 3 drops, each followed by a connection and a resume", seen)
	}
	t.Logf("bob: %d events, states %v", got.count(), seen)
}

// TestRequestInFlightDuringACut: bob's send reaches the edge and is
// accepted, but the answer is cut off with the connection. Send fails
// with ErrConnectionLost; retried with the same client message id it
// returns the original seq, and the message exists once.
func TestRequestInFlightDuringACut(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	p := newProxy(t, hostOf(e.url))
	bob := e.through(p, "bob", "bob-phone", sdk.Options{})
	got := newTally(t, "bob", bob)
	alice := e.dial("alice", "alice-1", false)
	acc, err := alice.CreateGroup(ctx, "cut", "bob")
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()
	alice.upTo(t, conv, 1)
	got.waitFor("the creation in", func(last map[string]uint64, _ int) bool { return last[conv] == 1 })

	p.hold()
	id := sdk.NewClientMsgID()
	res := make(chan error, 1)
	go func() {
		_, err := bob.SendWithID(ctx, conv, id, "in flight")
		res <- err
	}()
	// Alice seeing it means the edge took it; bob's answer is held.
	ev := alice.upTo(t, conv, 2)[0]
	if ev.GetClientMsgId() != id {
		t.Fatalf("alice got %v", ev)
	}
	p.sever()
	p.release()
	if err := <-res; !errors.Is(err, sdk.ErrConnectionLost) {
		t.Fatalf("send during the cut: %v, want ErrConnectionLost", err)
	}
	again, err := bob.SendWithID(ctx, conv, id, "in flight")
	if err != nil || !again.GetDuplicate() || again.GetSeq() != 2 {
		t.Fatalf("retry = %v, %v; want the original seq 2, duplicate", again, err)
	}
	next, err := bob.Send(ctx, conv, "after")
	if err != nil || next.GetSeq() != 3 {
		t.Fatalf("next = %v, %v; want seq 3", next, err)
	}
	got.waitFor("seq 3 in", func(last map[string]uint64, _ int) bool { return last[conv] == 3 })
}

// TestReconnectEndsOnARejectedToken: bob's token func starts handing out
// expired tokens; after a cut the SDK tries twice, then ends with
// ErrAuthRejected instead of looping. Close ends a client that cannot get
// through at once.
func TestReconnectEndsOnARejectedToken(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	p := newProxy(t, hostOf(e.url))
	var mu sync.Mutex
	calls := 0
	bob := e.through(p, "bob", "bob-phone", sdk.Options{TokenFunc: func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return e.minter.Mint("bob", time.Hour)
		}
		return e.minter.MintAt("bob", time.Now().Add(-2*time.Hour), time.Hour)
	}})
	carol := e.through(p, "carol", "carol-1", sdk.Options{})
	p.sever()
	select {
	case <-bob.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("bob still reconnecting with an expired token")
	}
	var we *wire.Error
	if err := bob.Err(); !errors.Is(err, sdk.ErrAuthRejected) || !errors.As(err, &we) || we.Code != chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED {
		t.Fatalf("bob ended with %v, want ErrAuthRejected (TOKEN_EXPIRED)", err)
	}
	mu.Lock()
	if calls != 3 {
		t.Errorf("token func called %d times, want 3", calls)
	}
	mu.Unlock()

	// Carol came back; now she cannot, and Close ends her at once.
	if err := carol.Ping(tctx(t)); err != nil {
		t.Fatal(err)
	}
	p.setRefuse(true)
	p.sever()
	// Wait for a redial to have failed.
	timeout := time.After(30 * time.Second)
	for failed := false; !failed; {
		select {
		case s := <-carol.States():
			failed = s.State == sdk.StateReconnecting && s.Attempt >= 1
		case <-timeout:
			t.Fatal("carol never retried")
		}
	}
	carol.Close()
	select {
	case <-carol.Done():
	default:
		t.Fatal("Close returned before the client was done")
	}
	if !errors.Is(carol.Err(), sdk.ErrClosed) {
		t.Fatalf("carol ended with %v", carol.Err())
	}
}

// TestDeviceResumesAcrossARestart stops the whole platform under bob's
// reconnecting device and starts it again on the same data: the edge's
// shutdown closes him with 4002 (reconnect elsewhere; its drain window is
// 0 here, so at once), his redials fail while it
// is down, and once it is back he resumes and gets what was posted
// meanwhile, after what he had, once each.
func TestDeviceResumesAcrossARestart(t *testing.T) {
	dir := t.TempDir()
	e, stop := start(t, dir)
	ctx := tctx(t)
	p := newProxy(t, hostOf(e.url))
	bob := e.through(p, "bob", "bob-phone", sdk.Options{})
	got := newTally(t, "bob", bob)
	alice := e.dial("alice", "alice-1", false)
	acc, err := alice.CreateGroup(ctx, "restart", "bob")
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()
	for i := range 10 {
		if _, err := alice.Send(ctx, conv, fmt.Sprintf("before %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	got.waitFor("11 events in", func(last map[string]uint64, _ int) bool { return last[conv] == 11 })
	stop()

	e, stop = start(t, dir)
	defer stop()
	p.setUpstream(hostOf(e.url))
	alice = e.dial("alice", "alice-2", false)
	for i := range 10 {
		if _, err := alice.Send(ctx, conv, fmt.Sprintf("after %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	got.waitFor("21 events in", func(last map[string]uint64, _ int) bool { return last[conv] == 21 })
	for {
		select {
		case s := <-bob.States():
			if s.State != sdk.StateReconnecting {
				continue
			}
			if websocket.CloseStatus(s.Err) != edge.CloseReconnect {
				t.Fatalf("dropped by the restart with %v, want 4002 reconnect elsewhere", s.Err)
			}
			return
		default:
			t.Fatal("no reconnecting state reported")
		}
	}
}

// TestUnreadEventsDoNotHoldAnswers: with events piling up unread, bob's
// requests are still answered; once more are unread than EventBuffer
// the SDK drops the connection rather than grow, and when bob reads
// again he gets every event once and in order.
func TestUnreadEventsDoNotHoldAnswers(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	p := newProxy(t, hostOf(e.url))
	bob := e.through(p, "bob", "bob-phone", sdk.Options{EventBuffer: 16})
	alice := e.dial("alice", "alice-1", false)
	newTally(t, "alice", alice.Client)
	acc, err := alice.CreateGroup(ctx, "unread", "bob")
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()
	for i := range 10 {
		if _, err := alice.Send(ctx, conv, fmt.Sprintf("early %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.Conversations(ctx, 10); err != nil {
		t.Fatalf("a request with events unread: %v", err)
	}
	for i := range 50 {
		if _, err := alice.Send(ctx, conv, fmt.Sprintf("late %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	timeout := time.After(30 * time.Second)
	for dropped := false; !dropped; {
		select {
		case s := <-bob.States():
			dropped = s.State == sdk.StateReconnecting && errors.Is(s.Err, sdk.ErrEventBufferFull)
		case <-timeout:
			t.Fatal("bob kept a connection he was not reading")
		}
	}
	got := newTally(t, "bob", bob)
	got.waitFor("all 61 events in", func(last map[string]uint64, _ int) bool { return last[conv] == 61 })
	if k := got.count(); k != 61 {
		t.Fatalf("bob got %d events, want 61", k)
	}
	if err := bob.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}
