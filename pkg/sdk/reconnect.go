package sdk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/coder/websocket"
	"github.com/parleychat/parley/pkg/wire"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// ReconnectPolicy says how a client redials after its connection drops.
type ReconnectPolicy struct {
	// MinDelay is the wait before the first redial (default 250ms); it
	// doubles with each failed attempt up to MaxDelay (default 30s). Each
	// wait is drawn between half and all of that, so clients cut off
	// together do not all return at the same instant.
	MinDelay, MaxDelay time.Duration
	// MaxAttempts ends the client after that many failed redials in a row
	// (0: keep trying until Close).
	MaxAttempts int
	// KeepAlive is how often the client pings the server, and how long it
	// waits for the pong before it treats the connection as dead (default
	// 30s, negative: never). Without it a link that dies silently is only
	// noticed by the next write.
	KeepAlive time.Duration
	// AttemptTimeout bounds one redial: dial, authenticate (default 20s).
	AttemptTimeout time.Duration
}

func (p ReconnectPolicy) withDefaults() ReconnectPolicy {
	if p.MinDelay <= 0 {
		p.MinDelay = 250 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 30 * time.Second
	}
	p.MaxDelay = max(p.MaxDelay, p.MinDelay)
	if p.KeepAlive == 0 {
		p.KeepAlive = 30 * time.Second
	}
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = 20 * time.Second
	}
	return p
}

// delay is the jittered wait before redial attempt n (0 is the first).
func (p ReconnectPolicy) delay(n int) time.Duration {
	d := p.MinDelay
	for i := 0; i < n && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	return d/2 + rand.N(d/2+1)
}

// State is where a client's connection stands.
type State int

// States, as reported on States().
const (
	// StateConnected: authenticated on a new connection; requests flow.
	StateConnected State = iota + 1
	// StateResumed: the catch-up asked for when the connection
	// authenticated has ended (StateChange.Resumed); what follows is live.
	StateResumed
	// StateReconnecting: the connection dropped or a redial failed
	// (StateChange.Err says why); the client dials again after
	// StateChange.Delay.
	StateReconnecting
	// StateClosed: the client is finished; StateChange.Err says why
	// (ErrClosed after Close).
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateResumed:
		return "resumed"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// StateChange is one change reported on States().
type StateChange struct {
	State State
	// SessionID is the new connection's session (StateConnected).
	SessionID string
	// Resumed is the server's account of a catch-up (StateResumed): each
	// conversation's seq at the seam, and the cursors that failed (each
	// also reported on Errors()); the client then reads those from
	// history itself, as far as history goes.
	Resumed *clientv1.Resumed
	// Err is why the connection dropped or the last redial failed
	// (StateReconnecting), or why the client ended (StateClosed).
	Err error
	// Attempt counts the redials that failed since the connection dropped
	// (StateReconnecting).
	Attempt int
	// Delay is the wait before the next redial (StateReconnecting).
	Delay time.Duration
}

// stateBuffer is how many state changes wait unread before the oldest
// are dropped.
const stateBuffer = 64

// States reports the client's connection state as it changes: Connected
// for every connection, Resumed when a resume ends, Reconnecting for
// every drop and failed redial, and Closed last. It holds the latest 64;
// older ones are dropped rather than stall the client.
func (c *Client) States() <-chan StateChange { return c.states }

func (c *Client) state(s StateChange) {
	c.smu.Lock()
	defer c.smu.Unlock()
	for {
		select {
		case c.states <- s:
			return
		default:
		}
		select {
		case <-c.states:
		default:
		}
	}
}

// maxResumeCursors is the most conversations the edge resumes on one
// connection (edge.MaxResumeCursors); beyond it the SDK resumes the most
// recently active ones, and a gap in another is filled when its next
// event shows it.
const maxResumeCursors = 1000

// supervise owns the client's connections: it waits for each to end and,
// when the client reconnects, dials the next.
func (c *Client) supervise(cn *conn) {
	for {
		select {
		case <-cn.dead:
		case <-c.ctx.Done():
			cn.ws.Close(websocket.StatusNormalClosure, "bye")
			<-cn.dead
		}
		c.mu.Lock()
		c.cur = nil
		c.mu.Unlock()
		cause := cn.err
		switch {
		case c.ctx.Err() != nil:
			c.finish(ErrClosed)
			return
		case c.opts.Reconnect == nil:
			c.finish(cause)
			return
		case !retryable(cause):
			c.finish(cause)
			return
		}
		next, err := c.redial(cause)
		if err != nil {
			c.finish(err)
			return
		}
		cn = next
	}
}

// redial dials until a connection authenticates, the client is closed, or
// a failure is permanent.
func (c *Client) redial(cause error) (*conn, error) {
	p := c.opts.Reconnect
	rejected := false
	for attempt := 0; ; attempt++ {
		delay := p.delay(attempt)
		if we := (*wire.Error)(nil); errors.As(cause, &we) && we.Code == chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED {
			// Refused for too many connections: the server's wait, not
			// ours, says when another is welcome.
			delay = max(delay, we.RetryAfter)
		}
		if be := (*BusyError)(nil); errors.As(cause, &be) {
			delay = max(delay, be.RetryAfter)
		}
		c.state(StateChange{State: StateReconnecting, Err: cause, Attempt: attempt, Delay: delay})
		if errors.Is(cause, ErrEventBufferFull) {
			// Coming back at once would only refill the buffer the app is
			// not reading; resume once it has made room.
			if !c.in.waitRoom(c.ctx) {
				return nil, ErrClosed
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return nil, ErrClosed
		}
		cn, err := c.attempt(p.AttemptTimeout)
		if err == nil {
			return cn, nil
		}
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if authRejected(err) {
			// A token func may have handed out a token that expired a
			// moment ago; a second refusal in a row is final.
			if c.opts.TokenFunc == nil || rejected {
				return nil, fmt.Errorf("%w: %w", ErrAuthRejected, err)
			}
			rejected = true
		} else {
			rejected = false
			if !retryable(err) {
				return nil, err
			}
		}
		if p.MaxAttempts > 0 && attempt+1 >= p.MaxAttempts {
			return nil, fmt.Errorf("reconnect: gave up after %d attempts: %w", attempt+1, err)
		}
		cause = err
	}
}

// attempt is one redial: token, dial, authenticate with the resume
// cursors, and the connection installed.
func (c *Client) attempt(timeout time.Duration) (*conn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	token := c.opts.Token
	if c.opts.TokenFunc != nil {
		var err error
		if token, err = c.opts.TokenFunc(ctx); err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
	}
	cn, a, err := c.connect(ctx, token, c.DeviceID, c.cursors())
	if err != nil {
		return nil, err
	}
	if a.GetUserId() != c.UserID {
		err := permanent(fmt.Errorf("reconnected as user %q, not %q: the token is someone else's", a.GetUserId(), c.UserID))
		cn.kill(err)
		<-cn.dead
		return nil, err
	}
	c.install(cn)
	return cn, nil
}

// install makes cn the current connection and releases the requests
// waiting for one.
func (c *Client) install(cn *conn) {
	cn.installed.Store(true)
	if c.installs.Add(1) > 1 {
		go c.rewatch()
	}
	c.mu.Lock()
	c.cur = cn
	close(c.up)
	c.up = make(chan struct{})
	c.mu.Unlock()
	if p := c.opts.Reconnect; p != nil && p.KeepAlive > 0 {
		go keepAlive(cn, p.KeepAlive)
	}
}

// finish ends the client.
func (c *Client) finish(err error) {
	if err == nil {
		err = ErrConnectionLost
	}
	c.mu.Lock()
	c.err = err
	c.cur = nil
	close(c.up)
	c.mu.Unlock()
	c.state(StateChange{State: StateClosed, Err: err})
	close(c.done)
	c.in.finish()
}

// keepAlive pings until the connection ends, and drops it when a pong
// does not come back in time.
func keepAlive(cn *conn, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-cn.dead:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		err := cn.ws.Ping(ctx)
		cancel()
		if err != nil {
			cn.kill(fmt.Errorf("keepalive: no pong within %v: %w", every, err))
			return
		}
	}
}

// cursors is the resume list: the last seq delivered per conversation,
// the most recently active first, at most maxResumeCursors.
func (c *Client) cursors() []*clientv1.Cursor {
	c.mu.Lock()
	type entry struct {
		conv string
		cur  cursor
	}
	all := make([]entry, 0, len(c.seen))
	for conv, cur := range c.seen {
		all = append(all, entry{conv, *cur})
	}
	c.mu.Unlock()
	slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(b.cur.touched, a.cur.touched) })
	all = all[:min(len(all), maxResumeCursors)]
	out := make([]*clientv1.Cursor, len(all))
	for i, e := range all {
		out[i] = &clientv1.Cursor{ConversationId: e.conv, LastSeq: e.cur.seq}
	}
	return out
}

// permanentError marks a failure that the same attempt would meet again.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

// authRejected: the server refused the token.
func authRejected(err error) bool {
	switch wire.CodeOf(err) {
	case chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED:
		var we *wire.Error
		return errors.As(err, &we)
	}
	return false
}

// retryable says whether a dropped connection or a failed redial is worth
// another attempt: network errors, server closes (4000 resync, 4002
// reconnect elsewhere from a draining edge, 1001 going away, …) and
// temporary server errors are; a refused token, a request the server
// calls invalid, a wrong subprotocol and the client's own
// Close are not.
func retryable(err error) bool {
	var p permanentError
	switch {
	case err == nil:
		return true
	case errors.As(err, &p), errors.Is(err, ErrClosed), authRejected(err):
		return false
	case wire.CodeOf(err) == chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT:
		var we *wire.Error
		return !errors.As(err, &we)
	}
	switch closeStatus(err) {
	case websocket.StatusPolicyViolation, websocket.StatusProtocolError, websocket.StatusUnsupportedData:
		return false
	}
	return true
}
