package edge

import (
	"context"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// item is one queued write: a frame, or an event or piece of state that
// the writer gathers with the others of its kind into one frame.
type item struct {
	frame    *clientv1.ServerFrame
	event    *chatv1.Event
	receipt  *chatv1.Receipt
	typing   *chatv1.Typing
	presence *chatv1.Presence
	flags    *chatv1.ConversationFlags
	// shared, when set, holds event's encodings for every connection it
	// is queued on (hub.deliver makes it).
	shared *sharedEvent
	// live marks an event pushed as it happened (not one of a resume's
	// catch-up): only those measure the written stage.
	live bool
	// answer marks the answer to a request: it counts as outstanding
	// until written (limits.go).
	answer bool
	// size is its bytes as queued (sizeOf), set when queued.
	size int
}

// ephemeral items are state, not history: they may be shed. A shed flags
// change is not lost either: the conversation list carries the flags, and
// lists it as changed for its user.
func (it item) ephemeral() bool {
	return it.receipt != nil || it.typing != nil || it.presence != nil || it.flags != nil
}

// coalesced items leave gathered with their kind (writer.go); the others
// are frames, written one by one in queue order.
func (it item) coalesced() bool { return it.event != nil || it.ephemeral() }

// send queues a frame.
func (c *conn) send(f *clientv1.ServerFrame) { c.enqueue(item{frame: f}, false) }

// push queues an event; false if the connection is gone or was just
// dropped for being too slow.
func (c *conn) push(ev *chatv1.Event) bool { return c.pushShared(ev, nil) }

// pushShared is push with the event's shared encodings (hub.deliver).
func (c *conn) pushShared(ev *chatv1.Event, shared *sharedEvent) bool {
	return c.enqueue(item{event: ev, shared: shared, live: true}, true)
}

// enqueue queues it; a live event of a conversation being resumed is held
// back instead (see resume.go).
func (c *conn) enqueue(it item, live bool) bool {
	if it.size == 0 {
		it.size = it.sizeOf()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if live && c.held != nil && !c.closed {
		if held, ok := c.held[it.event.GetConversationId()]; ok {
			if c.heldN+len(c.queue) < c.svc.cfg.QueueLimit && c.lim.heldBytes+c.lim.queueBytes+it.size <= c.svc.lim.cfg.QueueBytes {
				c.held[it.event.GetConversationId()] = append(held, it.event)
				c.heldN++
				c.lim.heldBytes += it.size
				return true
			}
		}
	}
	return c.enqueueLocked(it)
}

// pushEphemeral queues a receipt or a typing indicator unless the queue is
// half full. They are state, not history: a later one supersedes an
// earlier one, a dropped position is read again with get_receipts and a
// dropped indicator is renewed by its typist within seconds. So they give
// way to events, and are never the reason a connection is dropped.
func (c *conn) pushEphemeral(it item) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if len(c.queue)+c.heldN >= c.svc.cfg.QueueLimit/2 || c.lim.queueBytes+c.lim.heldBytes >= c.svc.lim.cfg.QueueBytes/2 {
		c.svc.stats.shedEphemeral.Add(1)
		return false
	}
	c.ephemeral++
	return c.enqueueLocked(it)
}

// shedLocked drops the queued ephemeral items to make room for durable ones.
func (c *conn) shedLocked() {
	kept := c.queue[:0]
	for _, it := range c.queue {
		if !it.ephemeral() {
			kept = append(kept, it)
		} else {
			c.lim.queueBytes -= it.size
		}
	}
	clear(c.queue[len(kept):])
	c.svc.stats.shedEphemeral.Add(int64(len(c.queue) - len(kept)))
	c.queue, c.ephemeral = kept, 0
}

// enqueueLocked is enqueue with c.mu held.
func (c *conn) enqueueLocked(it item) bool {
	if c.closed {
		return false
	}
	if it.size == 0 {
		it.size = it.sizeOf()
	}
	if c.fullLocked(it) && c.ephemeral > 0 && !it.ephemeral() {
		c.shedLocked()
	}
	if c.fullLocked(it) {
		// A durable event is never dropped silently: the client is told to
		// resync and catches up from history on reconnect.
		c.closed = true
		c.queue, c.held, c.heldN, c.ephemeral = nil, nil, 0, 0
		c.lim.queueBytes, c.lim.heldBytes = 0, 0
		// A writer blocked on the full socket holds the connection's write
		// lock, and a close frame sent beside it would time out and
		// degrade into a bare TCP close the client cannot tell from a
		// crash. So the writer sends it once its write completes (bounded
		// by WriteTimeout); with no writer, it is sent now.
		writer := c.writing
		c.resync = writer
		c.svc.stats.resyncs.Add(1)
		c.svc.log.Warn("edge: slow connection dropped", "user", c.user, "session", c.session, "queue_limit", c.svc.cfg.QueueLimit, "queue_bytes", c.svc.lim.cfg.QueueBytes)
		if !writer {
			go c.closeResync()
		}
		return false
	}
	c.queue = append(c.queue, it)
	c.lim.queueBytes += it.size
	if it.answer {
		c.lim.outstanding++
		c.lim.answerBytes += it.size
	}
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	return true
}

// take hands the writer everything queued. With nothing left (or the
// connection gone) the writer ends instead, and sends the resync close
// that enqueueLocked left to it.
func (c *conn) take() []item {
	c.mu.Lock()
	batch := c.queue
	c.queue, c.ephemeral, c.lim.queueBytes = nil, 0, 0
	if len(batch) > 0 && !c.closed {
		c.mu.Unlock()
		return batch
	}
	c.writing = false
	resync := c.resync
	c.resync = false
	c.mu.Unlock()
	if resync {
		c.closeResync()
	}
	return nil
}

// closeResync tells the client why before the close: an error RESYNC
// without a request id, then close 4000. Both are small and bounded by
// WriteTimeout; a socket that takes neither ends with a bare TCP close,
// which the client resumes from the same way.
func (c *conn) closeResync() {
	c.writeNow(context.Background(), errorFrame(chatv1.ErrorCode_ERROR_CODE_RESYNC,
		"this connection fell too far behind and its queue was dropped: reconnect and resume from the last seq of each conversation", ""))
	c.ws.Close(CloseResync, "resync")
}

// fullLocked reports whether it would pass the queue's bound in items or
// in bytes (Limits.QueueBytes, held events included).
func (c *conn) fullLocked(it item) bool {
	return len(c.queue)+c.heldN >= c.svc.cfg.QueueLimit ||
		c.lim.queueBytes+c.lim.heldBytes+it.size > c.svc.lim.cfg.QueueBytes
}
