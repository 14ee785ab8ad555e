package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/parleychat/parley/pkg/wire"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// Filling a gap from history: how long to wait for persistence to store
// events that live delivery got ahead of, and how often to look.
const (
	gapWait  = 10 * time.Second
	gapRetry = 100 * time.Millisecond
	gapPage  = 200
)

// inbox holds pushed events between the read loop and the deliverer,
// which waits for the app.
type inbox struct {
	limit int
	// block: a full inbox makes the read loop wait for room instead of
	// failing, so the socket stops being read (a client that does not
	// reconnect cannot resume what a dropped connection would lose).
	block bool
	mu    sync.Mutex
	q     []item
	// done: no more events will come.
	done bool
	// wake has a token when q or done changed.
	wake chan struct{}
	// room, when set, is closed once q is down to roomAt events.
	room   chan struct{}
	roomAt int
}

// item is a pushed event, or a conversation to catch up from history.
type item struct {
	ev   *chatv1.Event
	sync string
}

// add queues a frame's events from cn. With more than limit unread it
// fails with ErrEventBufferFull, or, if the inbox blocks and cn is
// installed, waits for room (until ctx ends or cn is killed). One frame
// always goes into an empty inbox, however large, so a small limit cannot
// refuse a catch-up forever.
func (in *inbox) add(ctx context.Context, cn *conn, evs []*chatv1.Event) error {
	in.mu.Lock()
	for len(in.q) > 0 && len(in.q)+len(evs) > in.limit {
		if !in.block {
			n := len(in.q)
			in.mu.Unlock()
			return fmt.Errorf("%w: %d waiting, Options.EventBuffer is %d", ErrEventBufferFull, n, in.limit)
		}
		if !cn.installed.Load() {
			break
		}
		room := in.waiter(max(0, in.limit-len(evs)))
		in.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ErrClosed
		case <-cn.killed:
			return errors.New("connection dropped")
		}
		in.mu.Lock()
	}
	for _, ev := range evs {
		in.q = append(in.q, item{ev: ev})
	}
	in.signal()
	in.mu.Unlock()
	return nil
}

// sync queues a catch-up of conv from history, in line with the events
// received before it.
func (in *inbox) sync(conv string) {
	in.mu.Lock()
	in.q = append(in.q, item{sync: conv})
	in.signal()
	in.mu.Unlock()
}

// waiter returns a channel closed once at most n events are queued; in.mu
// is held. There is one waiter at a time: the read loop of a blocking
// inbox, or the supervisor of a reconnecting client.
func (in *inbox) waiter(n int) chan struct{} {
	if in.room == nil {
		in.room = make(chan struct{})
	}
	in.roomAt = n
	return in.room
}

func (in *inbox) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// finish says no more events will come; what is queued is still delivered.
func (in *inbox) finish() {
	in.mu.Lock()
	in.done = true
	in.signal()
	in.mu.Unlock()
}

// next waits for the next item; false once the inbox is finished and
// empty, or ctx ends.
func (in *inbox) next(ctx context.Context) (item, bool) {
	in.mu.Lock()
	for len(in.q) == 0 {
		if in.done {
			in.mu.Unlock()
			return item{}, false
		}
		in.mu.Unlock()
		select {
		case <-in.wake:
		case <-ctx.Done():
			return item{}, false
		}
		in.mu.Lock()
	}
	it := in.q[0]
	in.q[0] = item{}
	in.q = in.q[1:]
	if in.room != nil && len(in.q) <= in.roomAt {
		close(in.room)
		in.room = nil
	}
	in.mu.Unlock()
	return it, true
}

// waitRoom waits until at most half the limit is queued; false if ctx
// ended first.
func (in *inbox) waitRoom(ctx context.Context) bool {
	in.mu.Lock()
	if len(in.q) <= in.limit/2 {
		in.mu.Unlock()
		return true
	}
	room := in.waiter(in.limit / 2)
	in.mu.Unlock()
	select {
	case <-room:
		return true
	case <-ctx.Done():
		return false
	}
}

// deliver hands events to the app in seq order per conversation: it drops
// what was delivered before (a resume overlapping what the app had, a
// re-push after a fan-out crash), fills a gap from history before the
// event that shows it, and catches up the conversations a resume failed.
func (c *Client) deliver() {
	defer close(c.events)
	for {
		it, ok := c.in.next(c.ctx)
		if !ok {
			return
		}
		if it.sync != "" {
			if !c.catchUp(it.sync) {
				return
			}
			continue
		}
		for _, e := range c.fill(it.ev) {
			if !c.hand(e) {
				return
			}
		}
	}
}

// hand delivers one event unless it is a duplicate; false once Close was
// called.
func (c *Client) hand(ev *chatv1.Event) bool {
	conv, seq := ev.GetConversationId(), ev.GetSeq()
	if last, ok := c.last(conv); ok && seq <= last {
		return true
	}
	select {
	case c.events <- ev:
	case <-c.ctx.Done():
		return false
	}
	c.note(conv, seq)
	return true
}

// last is the seq last delivered in conv, if the client knows one.
func (c *Client) last(conv string) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.seen[conv]
	if !ok {
		return 0, false
	}
	return cur.seq, true
}

// note records that the app holds conv up to seq.
func (c *Client) note(conv string, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.touch++
	if cur, ok := c.seen[conv]; ok {
		cur.seq, cur.touched = max(cur.seq, seq), c.touch
		return
	}
	c.seen[conv] = &cursor{seq: seq, touched: c.touch}
}

// fill returns ev preceded by the events between the last one delivered in
// its conversation and it, read from history, when it skips ahead: after
// a resume that failed for that conversation, or of one the client knows
// but did not resume (past the server's cursor limit). With no
// connection to read history on and a reconnect coming, it returns
// nothing: the resume will bring ev again. When history cannot supply the
// gap, ev is delivered after what it could and the gap is reported on
// Errors().
func (c *Client) fill(ev *chatv1.Event) []*chatv1.Event {
	conv, seq := ev.GetConversationId(), ev.GetSeq()
	last, ok := c.last(conv)
	if !ok || seq <= last+1 {
		return []*chatv1.Event{ev}
	}
	if c.takeLost(conv) {
		// The server said these events are gone (and Errors() has it):
		// history cannot have them, so waiting for it would only delay.
		return []*chatv1.Event{ev}
	}
	got, err := c.history(conv, last, seq-1)
	if err == nil {
		return append(got, ev)
	}
	if (errors.Is(err, errNotConnected) || errors.Is(err, errEnded) || errors.Is(err, ErrConnectionLost)) && c.opts.Reconnect != nil && c.Err() == nil {
		return nil
	}
	from := last + uint64(len(got)) + 1
	c.report(&wire.Error{Code: wire.CodeOf(err), Message: fmt.Sprintf(
		"conversation %s: events %d-%d missing and not in history (%v); page it with History later", conv, from, seq-1, err)})
	return append(got, ev)
}

// takeLost reports whether the server said conv lost events since the
// last gap, and forgets it.
func (c *Client) takeLost(conv string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	lost := c.lost[conv]
	delete(c.lost, conv)
	return lost
}

// history reads conv's events after seq from up to to, waiting up to
// gapWait for persistence to get there. It returns what it read, and an
// error when that is not all.
func (c *Client) history(conv string, from, to uint64) ([]*chatv1.Event, error) {
	ctx, cancel := context.WithTimeout(c.ctx, gapWait)
	defer cancel()
	var got []*chatv1.Event
	after := from
	for after < to {
		cn, err := c.conn(ctx, false)
		if err != nil {
			return got, err
		}
		p, err := historyPage(cn.do(ctx, &clientv1.ClientFrame{RequestId: c.requestID(), Frame: &clientv1.ClientFrame_GetHistory{
			GetHistory: &clientv1.GetHistory{ConversationId: conv, AfterSeq: proto.Uint64(after), Limit: uint32(min(to-after, gapPage))},
		}}))
		if err != nil {
			return got, err
		}
		for _, ev := range p.GetEvents() {
			if ev.GetSeq() != after+1 || ev.GetSeq() > to {
				break
			}
			got = append(got, ev)
			after = ev.GetSeq()
		}
		if after < to && !p.GetHasMore() {
			t := time.NewTimer(gapRetry)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return got, fmt.Errorf("history stops at seq %d: %w", after, ctx.Err())
			}
		}
	}
	return got, nil
}

// catchUp delivers conv's events after the last one delivered, read from
// history as far as it goes: a resume failed for conv (Resumed.failed),
// and its missed events would otherwise wait for its next live event. A
// failure is not reported again: the server's error frame for the resume
// already was. False once Close was called.
func (c *Client) catchUp(conv string) bool {
	after, ok := c.last(conv)
	if !ok {
		return true
	}
	ctx, cancel := context.WithTimeout(c.ctx, gapWait)
	defer cancel()
	for {
		cn, err := c.conn(ctx, false)
		if err != nil {
			return true
		}
		p, err := historyPage(cn.do(ctx, &clientv1.ClientFrame{RequestId: c.requestID(), Frame: &clientv1.ClientFrame_GetHistory{
			GetHistory: &clientv1.GetHistory{ConversationId: conv, AfterSeq: proto.Uint64(after), Limit: gapPage},
		}}))
		if err != nil {
			return true
		}
		for _, ev := range p.GetEvents() {
			if ev.GetSeq() != after+1 {
				return true
			}
			if !c.hand(ev) {
				return false
			}
			after = ev.GetSeq()
		}
		if !p.GetHasMore() || len(p.GetEvents()) == 0 {
			return true
		}
	}
}
