package edge

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// tokenClock ends a connection when its token does: a connection is only
// as good as the token it presented. TokenWarning before the expiry it
// pushes token_expiring once; a refresh_token with a token of the same
// user moves the expiry (and re-arms the warning); at the expiry the
// client is sent an Error TOKEN_EXPIRED and the connection is closed with
// 4001. Its fields but expired are guarded by conn.mu.
type tokenClock struct {
	// expired is set at the expiry; handle refuses every frame after it.
	expired atomic.Bool
	expires time.Time
	warned  bool
	// running: started, and neither stopped nor expired.
	running bool
	// timer fires at the warning, then at the expiry. It exists only while
	// that is near (armTokenLocked): a timer is about 150 bytes, and most
	// connections hold tokens of an hour or more; the keepalive's sweep
	// arms it in time.
	timer *time.Timer
}

// startTokenClock arms the clock of a connection that just authenticated.
func (c *conn) startTokenClock(expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.token.expires, c.token.warned, c.token.running = expires, false, true
	c.armTokenLocked(time.Now())
}

// extendToken moves the expiry to a refreshed token's.
func (c *conn) extendToken(expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.token.running {
		return
	}
	c.token.expires, c.token.warned = expires, false
	c.armTokenLocked(time.Now())
}

// stopTokenClock releases the timer when the connection ends.
func (c *conn) stopTokenClock() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.token.running = false
	if c.token.timer != nil {
		c.token.timer.Stop()
		c.token.timer = nil
	}
}

// armTokenLocked sets the timer for the next tick if it is due within two
// keepalive sweeps, and otherwise leaves the clock without one: the
// keepalive, every PingInterval, calls it again (sweepTokenClock), so a
// tick is armed at least one sweep before it is due.
func (c *conn) armTokenLocked(now time.Time) {
	if !c.token.running {
		return
	}
	d := c.nextTokenTickLocked(now)
	if within := 2 * c.svc.lim.cfg.PingInterval; within > 0 && d > within {
		if c.token.timer != nil {
			c.token.timer.Stop()
			c.token.timer = nil
		}
		return
	}
	if c.token.timer == nil {
		c.token.timer = time.AfterFunc(d, c.tokenTick)
		return
	}
	c.token.timer.Reset(d)
}

// sweepTokenClock arms the clock's timer once its tick is near.
func (c *conn) sweepTokenClock(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token.timer == nil && !c.closed {
		c.armTokenLocked(now)
	}
}

// nextTokenTickLocked is how long until the warning is due (at once when
// less than the warning is left), or until the expiry once warned.
func (c *conn) nextTokenTickLocked(now time.Time) time.Duration {
	left := c.token.expires.Sub(now)
	if !c.token.warned {
		return max(left-c.svc.cfg.TokenWarning, 0)
	}
	return max(left, 0)
}

// tokenTick runs on the clock's timer: it warns, or ends the connection,
// or (when a refresh raced it) re-arms.
func (c *conn) tokenTick() {
	c.mu.Lock()
	if c.closed || !c.token.running {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	left := c.token.expires.Sub(now)
	if left > 0 {
		if !c.token.warned && left <= c.svc.cfg.TokenWarning {
			c.token.warned = true
			c.svc.tokens.warned.Add(1)
			c.enqueueLocked(item{frame: &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_TokenExpiring{
				TokenExpiring: &clientv1.TokenExpiring{Expires: timestamppb.New(c.token.expires)},
			}}})
		}
		c.armTokenLocked(now)
		c.mu.Unlock()
		return
	}
	// Expired: the connection takes nothing more. What is queued is
	// dropped, as for a resync: the client reconnects with a fresh token
	// and resumes from what it holds.
	c.token.expired.Store(true)
	c.closed = true
	c.queue, c.held, c.heldN, c.ephemeral = nil, nil, 0, 0
	c.token.timer, c.token.running = nil, false
	c.mu.Unlock()
	c.svc.tokens.expired.Add(1)
	// A writer still in a write finishes it first (the socket serialises
	// writes, bounded by WriteTimeout), then finds the queue closed.
	c.writeNow(context.Background(), errorFrame(chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED, "token expired: reconnect with a fresh token", ""))
	c.ws.Close(CloseUnauthenticated, "token expired")
}

// refreshToken answers refresh_token: the connection lives on until the
// new token's expiry. The token must name the connection's user; a token
// that fails leaves the connection on the one it has.
func refreshToken(ctx context.Context, c *conn, f *clientv1.ClientFrame_RefreshToken) *clientv1.ServerFrame {
	id, err := c.svc.verifier.Verify(ctx, f.RefreshToken.GetToken())
	switch {
	case errors.Is(err, auth.ErrExpired):
		return errorFrame(chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED, "token expired", "")
	case err != nil:
		return errorFrame(chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, "invalid token", "")
	case id.User != c.user:
		return errorFrame(chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "the token names another user: a connection's user never changes", "")
	}
	c.extendToken(id.Expires)
	c.svc.tokens.refreshed.Add(1)
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_TokenRefreshed{TokenRefreshed: &clientv1.TokenRefreshed{Expires: timestamppb.New(id.Expires)}}}
}

// tokenStats count what token clocks did.
type tokenStats struct {
	warned, refreshed, expired atomic.Int64
}

func (t *tokenStats) register(reg *prometheus.Registry) {
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"service": "edge"}},
			func() float64 { return float64(v.Load()) })
	}
	reg.MustRegister(
		counter("parley_token_warnings_total", "token_expiring frames pushed to connections whose token expires soon.", &t.warned),
		counter("parley_token_refreshes_total", "refresh_token frames accepted: connections extended by a fresh token.", &t.refreshed),
		counter("parley_token_expiries_total", "Connections closed with 4001 because their token expired unrefreshed.", &t.expired),
	)
}
