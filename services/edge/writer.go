package edge

import (
	"context"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// writeLoop drains the queue, coalescing what queued while a write was in
// flight, and exits when the queue is empty.
func (c *conn) writeLoop() {
	for {
		batch := c.take()
		if batch == nil {
			return
		}
		ok := c.writeBatch(batch)
		if !ok {
			c.mu.Lock()
			c.closed, c.queue, c.writing, c.resync = true, nil, false, false
			c.mu.Unlock()
			c.ws.CloseNow()
			return
		}
	}
}

// writeBatch writes the items in queue order, except that the coalesced
// kinds between two frames leave together, as one frame per kind, just
// before the second frame: an answer never overtakes an event queued
// before it.
func (c *conn) writeBatch(batch []item) bool {
	start := 0
	for i, it := range batch {
		if it.coalesced() {
			continue
		}
		if !c.flush(batch[start:i]) || !c.writeNow(context.Background(), it.frame) {
			return false
		}
		if it.answer {
			c.answered(it.size)
		}
		start = i + 1
	}
	return c.flush(batch[start:])
}

// flush writes the coalesced items of a run without frames, kind by kind
// in the order of coalescing.
func (c *conn) flush(run []item) bool {
	if !c.flushEvents(run) {
		return false
	}
	for _, r := range coalescing {
		if f := r.frame(run); f != nil && !c.writeNow(context.Background(), f) {
			return false
		}
	}
	c.svc.stats.wrote(run)
	return true
}

// flushEvents writes the events of a run as one frame, built from their
// shared encodings when every one has them (sharedEventsFrame).
func (c *conn) flushEvents(run []item) bool {
	var shared []*sharedEvent
	for _, it := range run {
		switch {
		case it.event == nil:
		case it.shared == nil:
			return c.writeFrame(eventRule.frame(run))
		default:
			shared = append(shared, it.shared)
		}
	}
	if len(shared) == 0 {
		return true // no events in this run
	}
	data, ok, err := sharedEventsFrame(c.format, shared)
	if err != nil {
		c.svc.log.Error("edge: encode frame", "err", err)
		return true
	}
	if !ok {
		return c.writeFrame(eventRule.frame(run))
	}
	return c.writeData(context.Background(), data)
}

// writeFrame writes f unless it is nil.
func (c *conn) writeFrame(f *clientv1.ServerFrame) bool {
	return f == nil || c.writeNow(context.Background(), f)
}

// coalescing is the writer's rule for each coalesced kind but events
// (flushEvents, first), in the order a run's frames are written.
var coalescing = []interface {
	frame(run []item) *clientv1.ServerFrame
}{receiptRule, typingRule, presenceRule, flagsRule}

// rule says how the items of one kind in a run leave as one frame.
type rule[T comparable] struct {
	// of is the item's value of this kind, the zero value if it has none.
	of func(item) T
	// same reports whether b is about what a is about, so that only one
	// of them leaves; nil for events, which are history: all of them do.
	same func(a, b T) bool
	// newer reports whether next supersedes prev; nil when the later
	// one always does.
	newer func(prev, next T) bool
	wrap  func([]T) *clientv1.ServerFrame
}

// add adds x to a batch in the place of the first one it is the same as,
// or at the end.
func (r rule[T]) add(batch []T, x T) []T {
	if r.same != nil {
		for i, b := range batch {
			if r.same(b, x) {
				if r.newer == nil || r.newer(b, x) {
					batch[i] = x
				}
				return batch
			}
		}
	}
	return append(batch, x)
}

// frame is the run's items of this kind as one frame; nil if it has none.
func (r rule[T]) frame(run []item) *clientv1.ServerFrame {
	var zero T
	var batch []T
	for _, it := range run {
		if x := r.of(it); x != zero {
			batch = r.add(batch, x)
		}
	}
	if batch == nil {
		return nil
	}
	return r.wrap(batch)
}

var eventRule = rule[*chatv1.Event]{
	of: func(it item) *chatv1.Event { return it.event },
	wrap: func(b []*chatv1.Event) *clientv1.ServerFrame {
		return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Events{Events: &clientv1.EventBatch{Events: b}}}
	},
}

// receiptRule keeps the latest position of each device: positions only
// move forward, so the later one says it all.
var receiptRule = rule[*chatv1.Receipt]{
	of: func(it item) *chatv1.Receipt { return it.receipt },
	same: func(a, b *chatv1.Receipt) bool {
		return a.GetConversationId() == b.GetConversationId() && a.GetUserId() == b.GetUserId() && a.GetDeviceId() == b.GetDeviceId()
	},
	wrap: func(b []*chatv1.Receipt) *clientv1.ServerFrame {
		return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Receipts{Receipts: &clientv1.ReceiptBatch{Receipts: b}}}
	},
}

// typingRule keeps the latest indicator of each user in each conversation.
var typingRule = rule[*chatv1.Typing]{
	of:   func(it item) *chatv1.Typing { return it.typing },
	same: sameUserIn[*chatv1.Typing],
	wrap: func(b []*chatv1.Typing) *clientv1.ServerFrame {
		return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Typing{Typing: &clientv1.TypingBatch{Typing: b}}}
	},
}

// presenceRule keeps the latest state of each user.
var presenceRule = rule[*chatv1.Presence]{
	of:   func(it item) *chatv1.Presence { return it.presence },
	same: func(a, b *chatv1.Presence) bool { return a.GetUserId() == b.GetUserId() },
	wrap: func(b []*chatv1.Presence) *clientv1.ServerFrame {
		return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Presence{Presence: &clientv1.PresenceList{Presence: b}}}
	},
}

// flagsRule keeps the highest version of each conversation's flags,
// whatever order they were queued in.
var flagsRule = rule[*chatv1.ConversationFlags]{
	of:    func(it item) *chatv1.ConversationFlags { return it.flags },
	same:  sameUserIn[*chatv1.ConversationFlags],
	newer: func(prev, next *chatv1.ConversationFlags) bool { return next.GetVersion() > prev.GetVersion() },
	wrap: func(b []*chatv1.ConversationFlags) *clientv1.ServerFrame {
		return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Flags{Flags: &clientv1.FlagsBatch{Flags: b}}}
	},
}

// sameUserIn reports whether a and b are about the same user in the same
// conversation.
func sameUserIn[T interface {
	GetConversationId() string
	GetUserId() string
}](a, b T) bool {
	return a.GetConversationId() == b.GetConversationId() && a.GetUserId() == b.GetUserId()
}

// writeNow writes one frame, bounded by WriteTimeout; false if the socket
// failed. A frame that cannot be encoded is logged and skipped.
func (c *conn) writeNow(ctx context.Context, f *clientv1.ServerFrame) bool {
	data, err := wire.Encode(c.format, f)
	if err != nil {
		c.svc.log.Error("edge: encode frame", "err", err)
		return true
	}
	return c.writeData(ctx, data)
}

// writeData writes an encoded frame. WriteTimeout bounds it through the
// socket's write deadline, which the gate sets (gate.write).
func (c *conn) writeData(ctx context.Context, data []byte) bool {
	typ := websocket.MessageBinary
	if c.format == wire.JSON {
		typ = websocket.MessageText
	}
	return c.ws.Write(ctx, typ, data) == nil
}
