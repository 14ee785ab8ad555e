package edge

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// WebSocket close codes beyond RFC 6455's, in the private 4000-4999 range.
const (
	// CloseResync: the server dropped this connection's queue; reconnect and
	// sync from the last seq of each conversation.
	CloseResync websocket.StatusCode = 4000
	// CloseUnauthenticated: no valid token was presented, or the token
	// expired without a refresh_token (after an Error TOKEN_EXPIRED).
	CloseUnauthenticated websocket.StatusCode = 4001
	// CloseReconnect: this node is draining (shutting down); reconnect,
	// after a short jittered delay, to another node and resume.
	CloseReconnect websocket.StatusCode = 4002
)

// conn is one client connection. Its read loop runs in its own goroutine
// (the HTTP handler returns, releasing net/http's buffers) while there is
// something to read, and parks in the poller otherwise; its writer
// goroutine exists only while there is something to write, so an idle
// connection costs no goroutine (one where there is no poller).
type conn struct {
	svc *Service
	ws  *websocket.Conn
	// gate is ws's socket (gate.go): the read loop waits on it, or parks
	// the connection in the poller through it.
	gate   *gate
	format wire.Format

	user, device, session string
	// audiences are those the token put the user in (audiences.go), set
	// before the connection joins the hub and fixed from then on.
	audiences []audience

	// mu guards every field below it. It is never held across a socket
	// write or a remote call, so Push (under the hub's lock) never waits
	// for a client.
	mu    sync.Mutex
	queue []item
	// writing: a writer goroutine exists; it alone writes to the socket.
	writing bool
	// closed: the connection takes nothing more.
	closed bool
	// resync: the connection was dropped for overflowing its queue and
	// still owes the client the resync close frame.
	resync bool
	// held keeps back live events of conversations being resumed until
	// their catch-up from history is queued (resume.go); heldN counts them
	// against the queue limit.
	held  map[string][]*chatv1.Event
	heldN int
	// ephemeral counts the queued items that may be shed.
	ephemeral int
	// lastTyping is when this connection last forwarded a typing indicator
	// (unix nanoseconds: 8 bytes, not a time.Time's 24).
	lastTyping int64
	// idle is what the device last said with set_idle.
	idle bool
	// lim is the connection's share of the limits (limits.go); its
	// counters are guarded by mu.
	lim connLimits
	// token ends the connection when its token expires (tokenclock.go).
	token tokenClock
}

// serveWS accepts a WebSocket. It counts as live from here on, so
// shutdown closes and waits for it even while it authenticates.
func (s *Service) serveWS(w http.ResponseWriter, r *http.Request) {
	if !s.accepting.Load() {
		http.Error(w, "draining: connect to another node", http.StatusServiceUnavailable)
		return
	}
	ip := s.lim.clientIP(r)
	if !s.lim.acquireIP(ip) {
		refuseIP(w)
		return
	}
	// The turn comes before the upgrade: a connection waiting for it
	// costs a parked goroutine and its buffers, no work.
	if wait := s.lim.handshakeTurn(r.Context()); wait > 0 {
		s.lim.releaseIP(ip)
		refuseBusy(w, wait)
		return
	}
	heard := new(atomic.Int64)
	opts := s.lim.acceptOptions(heard)
	opts.Subprotocols = []string{wire.SubprotocolProto, wire.SubprotocolJSON}
	hj := &smallHijacker{ResponseWriter: w, heard: heard, writeTimeout: s.cfg.WriteTimeout}
	ws, err := websocket.Accept(hj, r, opts)
	if err != nil {
		s.lim.releaseIP(ip)
		return
	}
	format, ok := wire.FormatFor(ws.Subprotocol())
	if !ok {
		s.lim.releaseIP(ip)
		ws.Close(websocket.StatusPolicyViolation, "subprotocol must be "+wire.SubprotocolProto+" or "+wire.SubprotocolJSON)
		return
	}
	// Beyond this the library closes the connection; below it, oversize
	// frames get an error frame and the connection lives on.
	ws.SetReadLimit(int64(s.cfg.MaxFrameBytes) * 16)
	c := &conn{svc: s, ws: ws, gate: hj.gate, format: format, lim: connLimits{ip: ip, heard: heard}}
	c.heardNow()
	s.live.add(c)
	// Authentication runs here, in the handler's goroutine, and is bounded
	// by AuthTimeout; the net/http buffers this goroutine pins are released
	// once it returns.
	if !c.authenticate(context.Background()) {
		c.shutdown()
		return
	}
	c.gate.setOwner(c)
	c.heardNow()
	c.lim.authed.Store(true)
	go c.readLoop()
}

// sessionLocked is the connection's session as presence knows it.
func (c *conn) sessionLocked() *presencev1.Session {
	return &presencev1.Session{SessionId: c.session, UserId: c.user, DeviceId: c.device, Idle: c.idle}
}

// readLoop serves an authenticated connection until it ends or parks. It
// runs in a goroutine of its own, started after authentication: the stack
// a goroutine grows (the JWT check and the presence call run deep) stays
// with it. With nothing to read it hands the connection to the poller
// and ends (gate.await, poller_linux.go), which starts it again in a new
// goroutine when the client sends: an idle connection holds no goroutine.
// Every end but a park shuts the connection down.
func (c *conn) readLoop() {
	ctx := context.Background()
	for {
		c.heed()
		if !c.awaitRoom() {
			c.shutdown()
			return
		}
		parked, err := c.gate.await()
		if parked {
			return
		}
		if err != nil {
			c.shutdown()
			return
		}
		data, ferr, err := c.readFrame(ctx)
		if err != nil {
			c.shutdown()
			return
		}
		c.heardNow()
		if ferr != nil {
			c.answer(orRefused(c.admitBad(), wire.ErrorFrame("", ferr)))
			continue
		}
		frame, derr := wire.DecodeClient(c.format, data)
		if derr != nil {
			// The request id, when it could be read, is echoed whatever
			// the answer: a client can tell which request failed.
			id := echoable(frame.GetRequestId())
			answer := orRefused(c.admitBad(), wire.ErrorFrame(id, derr))
			answer.RequestId = id
			c.answer(answer)
			continue
		}
		if refused := c.admit(frame); refused != nil {
			refused.RequestId = frame.GetRequestId()
			c.answer(refused)
			continue
		}
		c.answer(c.handle(ctx, frame))
	}
}

// readFrame reads one message, enforcing the frame limit without closing
// the connection: an oversize frame is drained and reported.
func (c *conn) readFrame(ctx context.Context) ([]byte, *wire.Error, error) {
	typ, r, err := c.ws.Reader(ctx)
	if err != nil {
		return nil, nil, err
	}
	want := websocket.MessageBinary
	if c.format == wire.JSON {
		want = websocket.MessageText
	}
	data, err := io.ReadAll(io.LimitReader(r, int64(c.svc.cfg.MaxFrameBytes)+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > c.svc.cfg.MaxFrameBytes {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, nil, err
		}
		return nil, wire.Errorf(chatv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE, "frame exceeds %d bytes", c.svc.cfg.MaxFrameBytes), nil
	}
	if typ != want {
		return nil, wire.Errorf(chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, "expected %v frames for this subprotocol, got %v", want, typ), nil
	}
	return data, nil, nil
}

// shutdown runs when the read loop ends, whatever the reason.
func (c *conn) shutdown() {
	c.stopTokenClock()
	c.mu.Lock()
	c.closed = true
	c.queue, c.held, c.heldN = nil, nil, 0
	c.lim.queueBytes, c.lim.heldBytes = 0, 0
	c.mu.Unlock()
	if c.session != "" {
		c.svc.hub.remove(c)
		c.svc.watchers.remove(c)
		c.svc.reporter.disconnect(&presencev1.Session{SessionId: c.session, UserId: c.user, DeviceId: c.device})
		for _, s := range c.audienceSessions() {
			c.svc.reporter.disconnect(s)
		}
	}
	c.closeSocket()
	c.releaseLimits()
	c.svc.live.remove(c)
}

// closeSocket closes the socket as the read loop ends, unless the writer
// still owes the client the resync close (queue.go): a frame read after
// the queue was dropped ends the read loop, and closing then would cut
// the write in flight and the close frame behind it, leaving the client a
// bare TCP close it cannot tell from a crash. The writer's close, or its
// failed write (bounded by WriteTimeout), closes the socket instead.
func (c *conn) closeSocket() {
	c.mu.Lock()
	owed := c.resync
	c.mu.Unlock()
	if !owed {
		c.ws.CloseNow()
	}
}

// liveConns is every accepted connection, authenticated or not, so that
// shutdown can close them all and wait for their read loops.
type liveConns struct {
	// loops counts the connections not yet shut down.
	loops sync.WaitGroup
	// mu guards conns; a leaf in the lock order (package doc).
	mu    sync.Mutex
	conns map[*conn]struct{}
}

func (l *liveConns) add(c *conn) {
	l.loops.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns == nil {
		l.conns = map[*conn]struct{}{}
	}
	l.conns[c] = struct{}{}
}

// remove is the last step of a connection's shutdown.
func (l *liveConns) remove(c *conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.loops.Done()
}

func (l *liveConns) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// closeAll starts closing every connection; each close waits for the
// client's answer, so none waits for another.
func (l *liveConns) closeAll(code websocket.StatusCode, reason string) {
	for _, c := range l.snapshot() {
		go c.ws.Close(code, reason)
	}
}

// snapshot is every live connection now.
func (l *liveConns) snapshot() []*conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		out = append(out, c)
	}
	return out
}

// wait waits until every connection is shut down; false if ctx ended
// first.
func (l *liveConns) wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() { l.loops.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
