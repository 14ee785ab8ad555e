package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/wire"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// closeResync is the edge's close code for a connection it dropped for
// being too slow (edge.CloseResync).
const closeResync websocket.StatusCode = 4000

// discardEvents reads and drops cl's pushed events. A sender is usually a
// member and gets every event pushed; an SDK client whose events go unread
// stops reading the socket, answers included, once its buffer is full.
func discardEvents(cl *sdk.Client) *sdk.Client {
	go func() {
		for range cl.Events() {
		}
	}()
	return cl
}

// catchUp pages conv's history after seq from until it reaches to, waiting
// for persistence to get there, and checks the events are exactly
// from+1..to.
func catchUp(t *testing.T, ctx context.Context, c *sdk.Client, conv string, from, to uint64) []*chatv1.Event {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got []*chatv1.Event
	after := from
	for after < to {
		p, err := c.History(ctx, &clientv1.GetHistory{ConversationId: conv, AfterSeq: proto.Uint64(after), Limit: 200})
		// History lags the log: a conversation whose first events have
		// not been applied yet reads as not found, like one the reader
		// is not in. The callers' clients are members, so until the
		// deadline it means "not yet" (CI saw it on a persistence that
		// was ready 0.5 s before the read).
		var we *wire.Error
		if errors.As(err, &we) && we.Code == chatv1.ErrorCode_ERROR_CODE_NOT_FOUND && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("%s: history of %s after %d: %v", c.DeviceID, conv, after, err)
		}
		for _, ev := range p.GetEvents() {
			if ev.GetSeq() != after+1 {
				t.Fatalf("%s: %s history gives seq %d after %d", c.DeviceID, conv, ev.GetSeq(), after)
			}
			after = ev.GetSeq()
			got = append(got, ev)
		}
		if len(p.GetEvents()) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s history stops at seq %d, want %d", c.DeviceID, conv, after, to)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if after != to {
		t.Fatalf("%s: %s history reaches seq %d, want %d", c.DeviceID, conv, after, to)
	}
	return got
}

// sendMany sends n messages (client message ids start with tag) from the given clients in turn, concurrently,
// spreading them over convs, and records every answer in l.
func sendMany(ctx context.Context, l *ledger, tag string, clients []*sdk.Client, convs []string, n int, text func(i int) string) error {
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for k, cl := range clients {
		g.Go(func() error {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return nil
				}
				conv := convs[i%len(convs)]
				id := fmt.Sprintf("%s-%s-%d", tag, cl.DeviceID, i)
				acc, err := sendRetrying(gctx, cl, conv, id, text(i))
				if err != nil {
					return fmt.Errorf("sender %d message %d: %w", k, i, err)
				}
				if err := l.record(conv, id, acc.GetSeq(), text(i)); err != nil {
					return err
				}
			}
		})
	}
	return g.Wait()
}

// lastSeqs is each conversation's highest accepted seq in l (creation is 1).
func (l *ledger) lastSeqs() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]uint64{}
	for conv, byID := range l.byID {
		out[conv] = 1
		for _, m := range byID {
			out[conv] = max(out[conv], m.seq)
		}
	}
	return out
}

// TestOfflineDeviceCatchesUp takes one of bob's devices offline while
// 1,000 messages flow and brings it back on the other edge under the same
// device id with its cursors: it gets exactly what it missed, in order,
// then live events, with nothing missing or twice at the seam, and a
// cursor of a conversation it is not in fails alone. His other device,
// online throughout, got everything live.
func TestOfflineDeviceCatchesUp(t *testing.T) {
	s := requireStack(t)
	// A generous wait for persistence: the test is about the seam, and CI
	// machines are slow.
	c := startClusterWith(t, s, "-resume-wait=30s")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	const convs, missed = 5, 1000
	phone := c.dial(1, "bob", "bob-phone")
	laptop := c.dial(0, "bob", "bob-laptop")
	var senders []*sdk.Client
	for k := range 4 {
		senders = append(senders, discardEvents(c.dial(k%2, "alice", fmt.Sprintf("alice-%d", k))))
	}
	ids := createGroups(t, ctx, senders[0], convs, "offline", "bob")
	seen := expectLive(t, phone, convs, 30*time.Second)
	phone.Close()

	l := newLedger(ids)
	if err := sendMany(ctx, l, "away", senders, ids, missed, func(i int) string { return fmt.Sprintf("while away %d", i) }); err != nil {
		t.Fatal(err)
	}
	ends := l.lastSeqs()

	// No waiting for persistence here: the resume asks the sequencer for
	// each conversation's head and pages history until it gets there.
	// A conversation bob is not in: its cursor must fail alone.
	priv, err := senders[0].CreateGroup(ctx, "private", "carol")
	if err != nil {
		t.Fatal(err)
	}
	var cursors []*clientv1.Cursor
	for _, conv := range ids {
		cursors = append(cursors, &clientv1.Cursor{ConversationId: conv, LastSeq: seen[conv]})
	}
	cursors = append(cursors, &clientv1.Cursor{ConversationId: priv.GetConversationId()})

	// Back on the other edge under the same device id, resuming: the edge
	// sends what it missed from history and then live events, so the
	// device sees every conversation contiguous, nothing twice at the seam.
	tok, _ := c.minter.Mint("bob", time.Hour)
	back, err := sdk.Dial(ctx, sdk.Options{URL: c.edgeURLs[0], Token: tok, DeviceID: "bob-phone", Resume: cursors})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	last := map[string]uint64{}
	for conv, seq := range seen {
		last[conv] = seq
	}
	next := func(what string) {
		t.Helper()
		select {
		case ev := <-back.Events():
			conv := ev.GetConversationId()
			if ev.GetSeq() != last[conv]+1 {
				t.Fatalf("%s: %s seq %d after %d", what, conv, ev.GetSeq(), last[conv])
			}
			last[conv] = ev.GetSeq()
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no event in 30 s", what)
		}
	}
	for range missed {
		next("resume")
	}
	for _, conv := range ids {
		if last[conv] != ends[conv] {
			t.Fatalf("after resuming %d events, %s is at seq %d, want %d", missed, conv, last[conv], ends[conv])
		}
	}
	select {
	case r := <-back.Resumed():
		if len(r.GetCaughtUp()) != convs || len(r.GetFailed()) != 1 || r.GetFailed()[0].GetConversationId() != priv.GetConversationId() {
			t.Fatalf("resumed %v, want %d caught up and the private one failed", r, convs)
		}
		for _, cur := range r.GetCaughtUp() {
			if cur.GetLastSeq() < seen[cur.GetConversationId()] || cur.GetLastSeq() > ends[cur.GetConversationId()] {
				t.Fatalf("seam of %s at %d, outside %d..%d", cur.GetConversationId(), cur.GetLastSeq(), seen[cur.GetConversationId()], ends[cur.GetConversationId()])
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no resumed frame")
	}
	select {
	case e := <-back.Errors():
		if e.Code != chatv1.ErrorCode_ERROR_CODE_NOT_FOUND {
			t.Fatalf("resume of a conversation bob is not in: %v, want NOT_FOUND", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no error frame for the cursor bob may not resume")
	}
	if err := sendMany(ctx, l, "back", senders[:1], ids, convs, func(i int) string { return fmt.Sprintf("after return %d", i) }); err != nil {
		t.Fatal(err)
	}
	for range convs {
		next("live after resuming")
	}
	got := missed
	expectLive(t, laptop, convs+missed+convs, 60*time.Second)
	t.Logf("device away for %d messages resumed %d events, then live", missed, got)
}

// TestResendAfterTenThousand resends a message after 10,000 others in the
// same conversation, through the other edge from another device: the
// original seq comes back and nothing new is created.
func TestResendAfterTenThousand(t *testing.T) {
	s := requireStack(t)
	c := startCluster(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	first := c.dial(0, "alice", "alice-first")
	acc, err := first.CreateGroup(ctx, "ten thousand", "bob")
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()
	orig, err := first.SendWithID(ctx, conv, "the-one", "said once")
	if err != nil || orig.GetDuplicate() {
		t.Fatalf("first send: %v %v", orig, err)
	}
	l := newLedger([]string{conv})
	var senders []*sdk.Client
	for k := range 8 {
		senders = append(senders, discardEvents(c.dial(k%2, "alice", fmt.Sprintf("alice-%d", k))))
	}
	start := time.Now()
	if err := sendMany(ctx, l, "filler", senders, []string{conv}, 10000, func(i int) string { return fmt.Sprintf("filler %d", i) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("10,000 messages into one conversation in %s", time.Since(start).Round(time.Millisecond))
	last := l.lastSeqs()[conv]
	if last != orig.GetSeq()+10000 {
		t.Fatalf("last seq %d, want %d", last, orig.GetSeq()+10000)
	}

	other := c.dial(1, "alice", "alice-other-device")
	again, err := other.SendWithID(ctx, conv, "the-one", "said once")
	if err != nil || !again.GetDuplicate() || again.GetSeq() != orig.GetSeq() {
		t.Fatalf("resend after 10,000: %v %v, want a duplicate of seq %d", again, err, orig.GetSeq())
	}
	next, err := other.Send(ctx, conv, "and one more")
	if err != nil || next.GetSeq() != last+1 {
		t.Fatalf("next message: %v %v, want seq %d (the resend must not have taken one)", next, err, last+1)
	}
}

// smallReceiveBuffer dials with a 16 KiB socket receive buffer, which
// turns off the kernel's autotuning (up to 32 MiB here), so a client that
// stops reading backs the edge up quickly.
func smallReceiveBuffer() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestSlowReaderIsResynced has a device stop reading while large messages
// flow: the edge must close it with the resync code instead of buffering
// without bound, and the device must catch up from history, complete and
// in order.
func TestSlowReaderIsResynced(t *testing.T) {
	s := requireStack(t)
	// A small queue and a long write timeout make the queue limit, not the
	// write timeout, what ends the connection. Only edge 1, the slow
	// device's, has them: the senders on edge 0 read every message too, and
	// on a loaded machine a queue of 64 would drop them as well.
	c := startClusterEdges(t, s, [2][]string{nil, {"-queue-limit", "64", "-write-timeout", "60s"}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	alice := c.dial(0, "alice", "alice-0")
	acc, err := alice.CreateGroup(ctx, "slow", "bob")
	if err != nil {
		t.Fatal(err)
	}
	conv := acc.GetConversationId()
	tok, _ := c.minter.Mint("bob", time.Hour)
	// It holds seq 1 (the creation, which may still be on its way to it):
	// resuming from there, the edge drops that one if it arrives.
	slow, err := sdk.Dial(ctx, sdk.Options{URL: c.edgeURLs[1], Token: tok, DeviceID: "bob-slow", EventBuffer: 1, HTTPClient: smallReceiveBuffer(),
		Resume: []*clientv1.Cursor{{ConversationId: conv, LastSeq: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()

	const n = 1500
	l := newLedger([]string{conv})
	big := strings.Repeat("x", 8<<10)
	senders := []*sdk.Client{alice, c.dial(0, "alice", "alice-1"), c.dial(0, "alice", "alice-2")}
	for _, cl := range senders {
		discardEvents(cl)
	}
	if err := sendMany(ctx, l, "big", senders, []string{conv}, n, func(i int) string { return fmt.Sprintf("%d %s", i, big) }); err != nil {
		t.Fatal(err)
	}

	// Stay stalled past coder/websocket's 5 s close handshake timeout: the
	// resync close must still arrive once the device reads again.
	time.Sleep(6 * time.Second)

	// Now read what the slow device was sent before it was dropped.
	last := uint64(1)
	got := 0
	timeout := time.After(60 * time.Second)
read:
	for {
		select {
		case ev, ok := <-slow.Events():
			if !ok {
				break read
			}
			if ev.GetSeq() != last+1 {
				t.Fatalf("slow device: seq %d after %d", ev.GetSeq(), last)
			}
			last = ev.GetSeq()
			got++
		case <-timeout:
			t.Fatalf("slow device still connected after %d messages (%d events read): the edge never dropped it", n, got)
		}
	}
	if code := websocket.CloseStatus(slow.Err()); code != closeResync {
		t.Fatalf("slow device closed with %v (%v), want %d resync", code, slow.Err(), closeResync)
	}
	if got >= n {
		t.Fatalf("slow device read all %d events: it was never slow", got)
	}
	end := l.lastSeqs()[conv]
	back := c.dial(1, "bob", "bob-slow")
	missed := catchUp(t, ctx, back, conv, last, end)
	t.Logf("slow device dropped with %d after %d of %d events; caught up %d from history", closeResync, got, end, len(missed))
}
