package edge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// Close codes of the limits, beside conn.go's.
const (
	// CloseTooManyConnections: the user already has Limits.ConnsPerUser
	// connections on this node. The Error frame before it carries
	// retry_after_ms.
	CloseTooManyConnections websocket.StatusCode = 4029
	// CloseIdle: nothing was heard from the client (no frame, no pong to
	// the edge's ping) for Limits.IdleTimeout.
	CloseIdle websocket.StatusCode = 4008
)

// Bounds on what a client frame may carry, beside the frame size. The
// sequencer bounds the fields of commands (text, attachments, ids); these
// are the ones the edge alone reads.
const (
	// MaxRequestIDBytes bounds a frame's request_id, which the answer echoes.
	MaxRequestIDBytes = 64
	// MaxConversationIDBytes bounds the conversation_id of any frame.
	MaxConversationIDBytes = 64
)

// Rate is a token bucket: Events per Per, with bursts of up to Burst.
type Rate struct {
	Events float64
	Per    time.Duration
	Burst  int
	// Off turns this limit off.
	Off bool
}

// ParseRate reads "N/s", "N/m" or "N/h" with an optional ":BURST" (the
// burst is N if absent), or "off".
func ParseRate(s string) (Rate, error) {
	if s == "off" {
		return Rate{Off: true}, nil
	}
	spec, burst, hasBurst := strings.Cut(s, ":")
	n, unit, ok := strings.Cut(spec, "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want N/s, N/m or N/h, optionally :BURST, or off", s)
	}
	events, err := strconv.ParseFloat(n, 64)
	if err != nil || events <= 0 {
		return Rate{}, fmt.Errorf("rate %q: %q is not a positive number", s, n)
	}
	per := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	if per == 0 {
		return Rate{}, fmt.Errorf("rate %q: unit %q is not s, m or h", s, unit)
	}
	r := Rate{Events: events, Per: per, Burst: max(1, int(events))}
	if hasBurst {
		if r.Burst, err = strconv.Atoi(burst); err != nil || r.Burst < 1 {
			return Rate{}, fmt.Errorf("rate %q: burst %q is not a whole number above 0", s, burst)
		}
	}
	return r, nil
}

func (r Rate) String() string {
	if r.Off {
		return "off"
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h"}[r.Per]
	if unit == "" {
		return fmt.Sprintf("%g/%s:%d", r.Events, r.Per, r.Burst)
	}
	return fmt.Sprintf("%g/%s:%d", r.Events, unit, r.Burst)
}

// Set implements flag.Value.
func (r *Rate) Set(s string) error {
	v, err := ParseRate(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// limiter is a bucket for r; nil when r is off, which allows everything.
func (r Rate) limiter() *rate.Limiter {
	if r.Off {
		return nil
	}
	return rate.NewLimiter(rate.Limit(r.Events/r.Per.Seconds()), r.Burst)
}

// Limits bound what one client, user or address may cost an edge node.
// The zero value of a field takes its default (DefaultLimits); a Rate
// with Off, or a negative count, turns that limit off. Every per-user
// limit is kept by each edge node on its own: a user connected to k nodes
// may use k times each of them (docs/SECURITY.md).
type Limits struct {
	// Off turns every rate limit and connection cap off; the size bounds,
	// the queue bound, the outstanding-request bound and the keepalive
	// stay. For load benchmarks, not for service.
	Off bool
	// ConnMessages and UserMessages bound message frames (send, edit,
	// delete, react) per connection and per user.
	ConnMessages, UserMessages Rate
	// ConnRequests and UserRequests bound every frame after authenticate,
	// messages included.
	ConnRequests, UserRequests Rate
	// GroupOps bounds a user's create_conversation, add_member and
	// request_contact frames: each reaches out to other people.
	GroupOps Rate
	// Blocks bounds a user's block_user frames.
	Blocks Rate
	// ConnsPerUser caps a user's connections on this node.
	ConnsPerUser int
	// ConnsPerIP caps the connections from one client address, counted
	// from the WebSocket upgrade on.
	ConnsPerIP int
	// TrustedProxies are the addresses of proxies (an ingress controller)
	// whose X-Forwarded-For names the client; without them the client
	// address is the TCP peer.
	TrustedProxies []netip.Prefix
	// MaxOutstanding bounds the requests a connection has sent whose
	// answers are not yet written to its socket; at the bound the edge
	// stops reading from it until answers go out.
	MaxOutstanding int
	// QueueBytes bounds the bytes queued for one connection (its events,
	// answers and state changes); past it the connection is closed with
	// 4000 resync, like past Config.QueueLimit items. Answers alone may
	// take half of it before the edge stops reading requests.
	QueueBytes int
	// MaxResumeCursors bounds the distinct conversations one authenticate
	// resumes.
	MaxResumeCursors int
	// ResumeConcurrency bounds the resumes this node runs at once; more
	// wait their turn (their live events held meanwhile), so a reconnect
	// storm queues at the edge instead of flooding the sequencer and
	// persistence in front of live traffic. -1: no bound. It stays with
	// Off: it is capacity, not a defence.
	ResumeConcurrency int
	// Handshakes bounds the WebSocket upgrades this node starts, and
	// HandshakeWait how long a new connection may wait for its turn; past
	// that it is answered 503 with a jittered Retry-After. A reconnect
	// storm is let in at a pace the node can serve beside its live
	// traffic rather than all at once. Its default scales with the cores
	// (DefaultHandshakesPerCore); like ResumeConcurrency it stays with
	// Off: it is capacity, not a defence.
	Handshakes    Rate
	HandshakeWait time.Duration
	// PingInterval is how often the edge pings an authenticated client;
	// a ping unanswered within Config.WriteTimeout closes the connection.
	PingInterval time.Duration
	// IdleTimeout closes a connection from which nothing (no frame, no
	// pong, no ping) was heard for that long.
	IdleTimeout time.Duration
	// AllowedOrigins are the host patterns (path.Match, as in
	// "*.example.com", or with a scheme, "https://app.example.com") of the
	// pages that may open a WebSocket besides the edge's own host; "*"
	// allows any. A client that sends no Origin (not a browser) is always
	// allowed: it presents a token, never a cookie.
	AllowedOrigins []string
}

// DefaultLimits are the limits a node has unless told otherwise.
func DefaultLimits() Limits {
	return Limits{
		ConnMessages:      Rate{Events: 5, Per: time.Second, Burst: 20},
		UserMessages:      Rate{Events: 10, Per: time.Second, Burst: 40},
		ConnRequests:      Rate{Events: 50, Per: time.Second, Burst: 100},
		UserRequests:      Rate{Events: 100, Per: time.Second, Burst: 200},
		GroupOps:          Rate{Events: 120, Per: time.Hour, Burst: 30},
		Blocks:            Rate{Events: 60, Per: time.Hour, Burst: 20},
		ConnsPerUser:      20,
		ConnsPerIP:        200,
		MaxOutstanding:    32,
		QueueBytes:        4 << 20,
		MaxResumeCursors:  MaxResumeCursors,
		ResumeConcurrency: DefaultResumeConcurrency,
		Handshakes:        DefaultHandshakes(),
		HandshakeWait:     2 * time.Second,
		PingInterval:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
	}
}

func (l *Limits) defaults() {
	d := DefaultLimits()
	for _, r := range []struct{ v, d *Rate }{
		{&l.ConnMessages, &d.ConnMessages}, {&l.UserMessages, &d.UserMessages},
		{&l.ConnRequests, &d.ConnRequests}, {&l.UserRequests, &d.UserRequests},
		{&l.GroupOps, &d.GroupOps}, {&l.Blocks, &d.Blocks},
	} {
		if l.Off {
			*r.v = Rate{Off: true}
		} else if *r.v == (Rate{}) {
			*r.v = *r.d
		}
	}
	for _, n := range []struct{ v *int }{{&l.ConnsPerUser}, {&l.ConnsPerIP}} {
		if l.Off {
			*n.v = -1
		}
	}
	intDefault(&l.ConnsPerUser, d.ConnsPerUser)
	intDefault(&l.ConnsPerIP, d.ConnsPerIP)
	intDefault(&l.MaxOutstanding, d.MaxOutstanding)
	intDefault(&l.QueueBytes, d.QueueBytes)
	intDefault(&l.MaxResumeCursors, d.MaxResumeCursors)
	intDefault(&l.ResumeConcurrency, d.ResumeConcurrency)
	if l.Handshakes == (Rate{}) {
		l.Handshakes = d.Handshakes
	}
	if l.HandshakeWait == 0 {
		l.HandshakeWait = d.HandshakeWait
	}
	if l.PingInterval == 0 {
		l.PingInterval = d.PingInterval
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = d.IdleTimeout
	}
}

func intDefault(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}

// DefaultResumeConcurrency is Limits.ResumeConcurrency's default. In a
// 10,000-device storm on parley run (2 cores; parley-bench -only storm,
// upgrades paced, the embedded Kafka not syncing every batch) 64 resumed
// everyone in 6.4 s with the chatters' p99 at 102 ms, 16 took 11.3 s
// (64 ms), and 256 5.1 s (172 ms).
const DefaultResumeConcurrency = 64

// DefaultHandshakesPerCore paces a node's WebSocket upgrades, per core
// (GOMAXPROCS). In a 10,000-device storm on parley run (2 cores shared
// with the storm's client; parley-bench -only storm) upgrades let in as
// fast as they came (about 3,000/s) held the chatters' p99 at 134 ms,
// paced at 2,400/s at 68-117 ms and at 2,200/s at 64 ms, still 2,193
// connects a second (docs/BENCHMARKS.md).
const DefaultHandshakesPerCore = 1100

// DefaultHandshakes is Limits.Handshakes's default: DefaultHandshakesPerCore
// per core, a tenth of a second's worth at once.
func DefaultHandshakes() Rate {
	n := DefaultHandshakesPerCore * runtime.GOMAXPROCS(0)
	return Rate{Events: float64(n), Per: time.Second, Burst: max(n/10, 1)}
}

// handshakeTurn waits for a new connection's turn to upgrade, as
// Handshakes paces them. It returns 0 to go ahead, or, when the turn is
// further off than HandshakeWait (or the client left meanwhile), how long
// the client should wait before it tries again.
func (l *limiter) handshakeTurn(ctx context.Context) time.Duration {
	if l.handshakes == nil {
		return 0
	}
	r := l.handshakes.Reserve()
	if !r.OK() {
		// A burst of 0 never lets one in.
		l.refused[limitHandshakes].Add(1)
		return time.Minute
	}
	wait := r.Delay()
	if wait == 0 {
		return 0
	}
	if wait > l.cfg.HandshakeWait {
		r.Cancel()
		l.refused[limitHandshakes].Add(1)
		return max(wait, time.Second)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return 0
	case <-ctx.Done():
		r.Cancel()
		return time.Second
	}
}

// resumeTurn waits for a resume's turn, at most wait; the returned func
// ends it. Past wait the resume goes ahead anyway: the bound keeps a storm
// from crowding out live traffic, and must not starve a device for good.
func (l *limiter) resumeTurn(wait time.Duration) func() {
	if l.resumes == nil {
		return func() {}
	}
	select {
	case l.resumes <- struct{}{}:
		return func() { <-l.resumes }
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case l.resumes <- struct{}{}:
		return func() { <-l.resumes }
	case <-t.C:
		return func() {}
	}
}

// Which limit refused, as the rate-limited counter's label.
const (
	limitConnMessages = iota
	limitUserMessages
	limitConnRequests
	limitUserRequests
	limitGroupOps
	limitBlocks
	limitConnsPerUser
	limitConnsPerIP
	limitHandshakes
	limitKinds
)

var limitNames = [limitKinds]string{"conn_messages", "user_messages", "conn_requests", "user_requests", "group_ops", "blocks", "conns_per_user", "conns_per_ip", "handshakes"}

// limiter keeps the node's per-user and per-address state.
type limiter struct {
	cfg Limits
	// resumes holds a token per resume running (ResumeConcurrency); nil
	// for no bound.
	resumes chan struct{}
	// handshakes paces the upgrades (Handshakes); nil for no bound.
	handshakes *rate.Limiter
	// mu guards users and ips; a leaf in the lock order (package doc).
	mu    sync.Mutex
	users map[string]*userLimits
	ips   map[netip.Addr]int
	// refused counts the refusals, by limit.
	refused [limitKinds]atomic.Int64
	// paused counts the times a connection's reading was paused for its
	// unwritten answers; heeded, for sending past RATE_LIMITED.
	paused, heeded atomic.Int64
}

// userLimits are one user's buckets on this node. They outlive the user's
// connections until they are full again (sweep), so reconnecting does not
// refill them.
type userLimits struct {
	conns                                int
	messages, requests, groupOps, blocks lazyBucket
}

// lazyBucket is a user's bucket, made when first taken from: a bucket
// nobody has taken from is full, so making it then changes nothing, and
// a user whose connections only listen is spared four of them (about
// 320 bytes). Connections of a user take from it on their own read
// loops, hence the atomic.
type lazyBucket struct{ p atomic.Pointer[rate.Limiter] }

// get is the bucket for r, made if need be; nil when r is off.
func (b *lazyBucket) get(r Rate) *rate.Limiter {
	if l := b.p.Load(); l != nil {
		return l
	}
	l := r.limiter()
	if l == nil || b.p.CompareAndSwap(nil, l) {
		return l
	}
	return b.p.Load()
}

func newLimiter(cfg Limits, reg *prometheus.Registry) *limiter {
	l := &limiter{cfg: cfg, users: map[string]*userLimits{}, ips: map[netip.Addr]int{}}
	if cfg.ResumeConcurrency > 0 {
		l.resumes = make(chan struct{}, cfg.ResumeConcurrency)
	}
	l.handshakes = cfg.Handshakes.limiter()
	for kind, name := range limitNames {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "parley_rate_limited_total", ConstLabels: prometheus.Labels{"service": "edge", "limit": name},
			Help: "Frames answered RATE_LIMITED and connections refused, by the limit that refused them.",
		}, func() float64 { return float64(l.refused[kind].Load()) }))
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "parley_read_paused_total", ConstLabels: prometheus.Labels{"service": "edge", "reason": "outstanding"},
		Help: "Times the edge stopped reading a connection: for its unwritten answers (outstanding), or for sending on past RATE_LIMITED (rate_limited).",
	}, func() float64 { return float64(l.paused.Load()) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "parley_read_paused_total", ConstLabels: prometheus.Labels{"service": "edge", "reason": "rate_limited"},
		Help: "Times the edge stopped reading a connection: for its unwritten answers (outstanding), or for sending on past RATE_LIMITED (rate_limited).",
	}, func() float64 { return float64(l.heeded.Load()) }))
	return l
}

// connLimits is one connection's share of the limits.
type connLimits struct {
	messages, requests *rate.Limiter
	user               *userLimits
	// ip is the client address counted against ConnsPerIP, if valid.
	ip netip.Addr
	// heard is when the client was last heard from (unix nanoseconds).
	heard *atomic.Int64
	// authed is set once the read loop runs: the keepalive pings only
	// connections whose frames (and so pongs) are being read.
	authed atomic.Bool
	// room wakes a read loop paused for its unwritten answers; made, under
	// conn.mu, when it first pauses.
	room chan struct{}
	// Read loop only: refusals counts the frames refused in a row, and
	// quietUntil is when the last refused one's bucket has a token again.
	refusals   int
	quietUntil int64 // unix nanoseconds

	// Under conn.mu:
	// outstanding and answerBytes count the answers not yet written.
	outstanding, answerBytes int
	// queueBytes counts the bytes of queue; heldBytes those of held.
	queueBytes, heldBytes int
}

// acquireIP counts a new connection from ip; false if it would pass the
// cap, with how long to wait.
func (l *limiter) acquireIP(ip netip.Addr) bool {
	if l.cfg.ConnsPerIP < 0 || !ip.IsValid() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ips[ip] >= l.cfg.ConnsPerIP {
		l.refused[limitConnsPerIP].Add(1)
		return false
	}
	l.ips[ip]++
	return true
}

func (l *limiter) releaseIP(ip netip.Addr) {
	if l.cfg.ConnsPerIP < 0 || !ip.IsValid() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ips[ip]--; l.ips[ip] <= 0 {
		delete(l.ips, ip)
	}
}

// join counts a connection of user; nil if the user has ConnsPerUser
// already.
func (l *limiter) join(user string) *userLimits {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.users[user]
	if u == nil {
		u = &userLimits{}
		l.users[user] = u
	}
	if l.cfg.ConnsPerUser >= 0 && u.conns >= l.cfg.ConnsPerUser {
		l.refused[limitConnsPerUser].Add(1)
		return nil
	}
	u.conns++
	return u
}

func (l *limiter) leave(u *userLimits) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u.conns--
}

// sweep forgets the users with no connection whose buckets are full
// again: forgetting them loses nothing.
func (l *limiter) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, u := range l.users {
		if u.conns == 0 && full(u.messages.p.Load(), now) && full(u.requests.p.Load(), now) && full(u.groupOps.p.Load(), now) && full(u.blocks.p.Load(), now) {
			delete(l.users, name)
		}
	}
}

func full(b *rate.Limiter, now time.Time) bool {
	return b == nil || b.TokensAt(now) >= float64(b.Burst())
}

// clientIP is the address a request comes from: the TCP peer, or, when
// the peer is a trusted proxy, the nearest address in X-Forwarded-For
// that is not one.
func (l *limiter) clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	ip := ap.Addr().Unmap()
	if !l.trusted(ip) {
		return ip
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			// Whatever is left of a malformed hop was written by someone
			// untrusted: the last good address stands.
			return ip
		}
		ip = hop.Unmap()
		if !l.trusted(ip) {
			return ip
		}
	}
	return ip
}

func (l *limiter) trusted(ip netip.Addr) bool {
	for _, p := range l.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// acceptOptions checks the Origin of a browser's upgrade against
// AllowedOrigins (the edge's own host always passes) and notes pongs as
// signs of life. The gate notes the pings and pongs that come between
// messages; this is for those inside a fragmented message, which
// coder/websocket reads, and a pong needs noting for the keepalive (a
// ping a frame's end merely follows is noted by the read loop anyway).
func (l *limiter) acceptOptions(heard *atomic.Int64) *websocket.AcceptOptions {
	o := &websocket.AcceptOptions{
		OnPongReceived: func(context.Context, []byte) { heard.Store(time.Now().UnixNano()) },
	}
	for _, p := range l.cfg.AllowedOrigins {
		if p == "*" {
			o.InsecureSkipVerify = true
		}
	}
	if !o.InsecureSkipVerify {
		o.OriginPatterns = l.cfg.AllowedOrigins
	}
	return o
}

// refuseBusy answers an upgrade that would wait too long for its turn:
// come back after about wait, spread over as long again so the clients
// refused together do not return together.
func refuseBusy(w http.ResponseWriter, wait time.Duration) {
	secs := int((min(wait, time.Hour) + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs+rand.IntN(secs+1)))
	http.Error(w, "this node is taking connections in turn: retry after the Retry-After seconds", http.StatusServiceUnavailable)
}

// refuseIP answers an upgrade over the per-address cap.
func refuseIP(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(1+rand.IntN(5)))
	http.Error(w, "too many connections from this address", http.StatusTooManyRequests)
}

// joinUser counts the authenticated connection against its user's cap
// and gives it its buckets; an Error frame if the cap is reached.
func (c *conn) joinUser(user string) *clientv1.ServerFrame {
	cfg := c.svc.lim.cfg
	u := c.svc.lim.join(user)
	if u == nil {
		return rateLimited(fmt.Sprintf("at most %d connections per user", cfg.ConnsPerUser), jitter(5*time.Second))
	}
	c.lim.user = u
	return nil
}

// connBuckets gives the connection its buckets with its first frame after
// authentication, not before: a bucket unused since it was made is full
// either way, and an idle connection is spared two of them. Read loop
// only.
func (c *conn) connBuckets() {
	if c.lim.requests == nil {
		cfg := c.svc.lim.cfg
		c.lim.messages, c.lim.requests = cfg.ConnMessages.limiter(), cfg.ConnRequests.limiter()
	}
}

// releaseLimits gives back what the connection counted against its user
// and address.
func (c *conn) releaseLimits() {
	if c.lim.user != nil {
		c.svc.lim.leave(c.lim.user)
	}
	c.svc.lim.releaseIP(c.lim.ip)
}

// Kinds of frames, by the buckets they take from beside the request ones.
var (
	messageFrames = frameTypes(
		&clientv1.ClientFrame_SendMessage{}, &clientv1.ClientFrame_EditMessage{},
		&clientv1.ClientFrame_DeleteMessage{}, &clientv1.ClientFrame_React{},
	)
	groupFrames = frameTypes(&clientv1.ClientFrame_CreateConversation{}, &clientv1.ClientFrame_AddMember{}, &clientv1.ClientFrame_RequestContact{})
	blockFrames = frameTypes(&clientv1.ClientFrame_BlockUser{})
)

func frameTypes(bodies ...any) map[reflect.Type]bool {
	m := map[reflect.Type]bool{}
	for _, b := range bodies {
		m[reflect.TypeOf(b)] = true
	}
	return m
}

// admit checks a decoded frame against the bounds and the connection's
// and user's buckets before it is handled; the answer if it is refused.
func (c *conn) admit(f *clientv1.ClientFrame) *clientv1.ServerFrame {
	// Every frame costs a request token, even one refused for its bounds.
	if refused := c.admitBad(); refused != nil {
		return refused
	}
	if len(f.GetRequestId()) > MaxRequestIDBytes {
		// The answer cannot echo an id it refuses; it goes out without one.
		f.RequestId = ""
		return errorFrame(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, fmt.Sprintf("request_id longer than %d bytes", MaxRequestIDBytes), "")
	}
	if e := bounds(f); e != nil {
		return e
	}
	body := reflect.TypeOf(f.GetFrame())
	cfg := c.svc.lim.cfg
	var checks []bucket
	switch {
	case messageFrames[body]:
		checks = append(checks, bucket{c.lim.messages, limitConnMessages}, bucket{c.lim.user.messages.get(cfg.UserMessages), limitUserMessages})
	case groupFrames[body]:
		checks = append(checks, bucket{c.lim.user.groupOps.get(cfg.GroupOps), limitGroupOps})
	case blockFrames[body]:
		checks = append(checks, bucket{c.lim.user.blocks.get(cfg.Blocks), limitBlocks})
	}
	if refused := c.takeTokens(checks); refused != nil {
		return refused
	}
	c.lim.refusals = 0
	return nil
}

// admitBad charges a frame to the request buckets, which every frame
// takes from: one that did not decode, or was too large, too, since
// garbage costs the edge a read like any frame. Its answer if refused.
func (c *conn) admitBad() *clientv1.ServerFrame {
	c.connBuckets()
	return c.takeTokens([]bucket{{c.lim.requests, limitConnRequests}, {c.lim.user.requests.get(c.svc.lim.cfg.UserRequests), limitUserRequests}})
}

// takeTokens takes a token from each bucket in turn; the RATE_LIMITED answer
// of the first that has none.
func (c *conn) takeTokens(checks []bucket) *clientv1.ServerFrame {
	now := time.Now()
	for _, ch := range checks {
		if ch.b == nil || ch.b.AllowN(now, 1) {
			continue
		}
		c.svc.lim.refused[ch.kind].Add(1)
		wait := refillIn(ch.b, now)
		c.lim.refusals++
		c.lim.quietUntil = now.Add(wait).UnixNano()
		return rateLimited(fmt.Sprintf("too many frames (%s limit)", limitNames[ch.kind]), jitter(wait))
	}
	return nil
}

// Past floodRefusals refusals in a row the client is not heeding
// retry_after: its next frame is read only once the bucket that refused
// the last one has a token again (at most floodPause later, so its pongs
// are still read in time). TCP then holds the flood back at the client,
// and a flood costs the edge what the limit lets through, not a read,
// a decode and an answer per frame.
const (
	floodRefusals = 3
	floodPause    = time.Second
)

// heed waits, before the read loop reads again, until a client that keeps
// sending past RATE_LIMITED may be answered otherwise.
func (c *conn) heed() {
	if c.lim.refusals < floodRefusals {
		return
	}
	if d := min(time.Until(time.Unix(0, c.lim.quietUntil)), floodPause); d > 0 {
		c.svc.lim.heeded.Add(1)
		time.Sleep(d)
	}
}

// bucket is one bucket a frame takes a token from, and the limit it is.
type bucket struct {
	b    *rate.Limiter
	kind int
}

// bounds checks the client-supplied sizes the edge itself reads.
func bounds(f *clientv1.ClientFrame) *clientv1.ServerFrame {
	if g, ok := frameBody(f).(interface{ GetConversationId() string }); ok && len(g.GetConversationId()) > MaxConversationIDBytes {
		return errorFrame(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, fmt.Sprintf("conversation_id longer than %d bytes", MaxConversationIDBytes), "")
	}
	return nil
}

// frameBody is the message inside a ClientFrame's oneof wrapper.
func frameBody(f *clientv1.ClientFrame) any {
	w := reflect.ValueOf(f.GetFrame())
	if !w.IsValid() || w.Kind() != reflect.Pointer || w.IsNil() || w.Elem().Kind() != reflect.Struct || w.Elem().NumField() != 1 {
		return nil
	}
	return w.Elem().Field(0).Interface()
}

// rateLimited is the RATE_LIMITED answer.
func rateLimited(msg string, after time.Duration) *clientv1.ServerFrame {
	return &clientv1.ServerFrame{Frame: &clientv1.ServerFrame_Error{Error: &clientv1.Error{
		Code: chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED, Message: msg, RetryAfterMs: uint32(max(after.Milliseconds(), 1)),
	}}}
}

// refillIn is how long until b has a token again.
func refillIn(b *rate.Limiter, now time.Time) time.Duration {
	need := 1 - b.TokensAt(now)
	d := time.Duration(max(need, 0) / float64(b.Limit()) * float64(time.Second))
	return max(d, time.Millisecond)
}

// jitter lengthens d by up to half, so clients refused together spread
// out; never shortens it, so a retry after it finds a token.
func jitter(d time.Duration) time.Duration { return d + rand.N(d/2+1) }

// answer queues the answer to a request; it counts as outstanding until
// the writer has written it.
func (c *conn) answer(f *clientv1.ServerFrame) { c.enqueue(item{frame: f, answer: true}, false) }

// answered is the writer's note that an answer of size bytes is written.
func (c *conn) answered(size int) {
	c.mu.Lock()
	c.lim.outstanding--
	c.lim.answerBytes -= size
	room := c.lim.room
	c.mu.Unlock()
	select {
	case room <- struct{}{}:
	default:
	}
}

// awaitRoom waits, before the read loop reads another request, until the
// connection has fewer than MaxOutstanding unwritten answers taking less
// than half of QueueBytes. A client that sends faster than it reads is
// slowed down, not dropped; one that never reads is dropped by the
// writer's timeout. False if the connection closed meanwhile.
func (c *conn) awaitRoom() bool {
	cfg := c.svc.lim.cfg
	counted := false
	for {
		c.mu.Lock()
		closed := c.closed
		full := c.lim.outstanding >= cfg.MaxOutstanding || c.lim.answerBytes >= cfg.QueueBytes/2
		if full && c.lim.room == nil {
			// Made in the same hold of mu as the check: the writer's
			// next answered finds it and wakes this loop.
			c.lim.room = make(chan struct{}, 1)
		}
		room := c.lim.room
		c.mu.Unlock()
		if closed {
			return false
		}
		if !full {
			return true
		}
		if !counted {
			c.svc.lim.paused.Add(1)
			counted = true
		}
		// The writer wakes it; the timer covers a close, which does not.
		t := time.NewTimer(time.Second)
		select {
		case <-room:
		case <-t.C:
		}
		t.Stop()
	}
}

// heardNow notes that the client was heard from.
func (c *conn) heardNow() { c.lim.heard.Store(time.Now().UnixNano()) }

// keepalivePings bounds the pings being written at once.
const keepalivePings = 128

// keepalive pings every authenticated connection each PingInterval and
// closes the ones idle for IdleTimeout, until ctx ends. One loop serves
// the node; each ping is written by a goroutine of its own (a client that
// does not read can hold a write up to its bound), at most keepalivePings
// at a time, and its answer is checked by a timer, so an idle connection
// costs no goroutine of its own beyond its read loop.
func (s *Service) keepalive(ctx context.Context) {
	cfg := s.lim.cfg
	t := time.NewTicker(cfg.PingInterval)
	defer t.Stop()
	pings := make(chan struct{}, keepalivePings)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		s.lim.sweep(now)
		for _, c := range s.live.snapshot() {
			if !c.lim.authed.Load() {
				continue
			}
			c.sweepTokenClock(now)
			if now.Sub(time.Unix(0, c.lim.heard.Load())) >= cfg.IdleTimeout {
				s.log.Info("edge: idle connection closed", "user", c.user, "session", c.session, "idle_timeout", cfg.IdleTimeout)
				go c.ws.Close(CloseIdle, "idle")
				continue
			}
			if !c.needsPing() {
				continue
			}
			select {
			case pings <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func() { c.ping(); <-pings }()
		}
	}
}

// needsPing says whether the keepalive should ping c now: not while it
// is closing, nor while a write is in flight (a ping behind a full socket
// would wait on the write, which WriteTimeout bounds anyway). A connection
// that was merely written to recently is pinged like any other: a client
// that only receives answers nothing but pongs, and without them the idle
// timeout would close it while it reads.
func (c *conn) needsPing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.writing
}

// ping pings the client; nothing heard from it within WriteTimeout (its
// pong, which the gate or coder/websocket notes, or any frame) ends the
// connection, unless it is already closing (a CloseNow would cut its
// close frame).
func (c *conn) ping() {
	sent := time.Now().UnixNano()
	if err := c.gate.control(opPing, nil); err != nil {
		return
	}
	time.AfterFunc(c.svc.cfg.WriteTimeout, func() {
		if c.lim.heard.Load() >= sent {
			return
		}
		c.mu.Lock()
		closing := c.closed
		c.mu.Unlock()
		if !closing {
			c.ws.CloseNow()
		}
	})
}

// dedupeCursors keeps the first cursor of each conversation.
func dedupeCursors(cursors []*clientv1.Cursor) []*clientv1.Cursor {
	seen := make(map[string]bool, len(cursors))
	out := cursors[:0:0]
	for _, cur := range cursors {
		if !seen[cur.GetConversationId()] {
			seen[cur.GetConversationId()] = true
			out = append(out, cur)
		}
	}
	return out
}

// size is how many bytes it holds queued, about: its encoded size.
func (it item) sizeOf() int {
	var m proto.Message
	switch {
	case it.frame != nil:
		m = it.frame
	case it.event != nil:
		m = it.event
	case it.receipt != nil:
		m = it.receipt
	case it.typing != nil:
		m = it.typing
	case it.presence != nil:
		m = it.presence
	case it.flags != nil:
		m = it.flags
	default:
		return 0
	}
	return proto.Size(m) + itemOverhead
}

// itemOverhead is what a queued item costs beside its message's bytes.
const itemOverhead = 64

// heldSize is the bytes that held events count (enqueue).
func heldSize(evs []*chatv1.Event) int {
	n := 0
	for _, ev := range evs {
		n += item{event: ev}.sizeOf()
	}
	return n
}

// orRefused is refused if it is set, else answer.
// echoable is the request id of a frame that did not decode, for its
// answer to echo: none if it is longer than MaxRequestIDBytes.
func echoable(id string) string {
	if len(id) > MaxRequestIDBytes {
		return ""
	}
	return id
}

func orRefused(refused, answer *clientv1.ServerFrame) *clientv1.ServerFrame {
	if refused != nil {
		return refused
	}
	return answer
}
