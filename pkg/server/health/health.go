// Package health serves the /healthz and /readyz probes every service
// has, and /metrics beside them for services that keep metrics.
//
// Readiness says whether the service can do its job now: its own
// lifecycle (started, not draining or stopping) and each dependency it
// needs (Kafka, Cassandra, partitions owned, the services it calls). A
// check reads state the service keeps up to date (a ping's last answer,
// a connection's state); none calls out when probed, so a probe is cheap
// and never hangs. /readyz names the first thing not ready.
//
// Liveness says whether the process is still working: each watched loop
// (a consumer's poll loop, say) must check in within its bound. A loop
// busy handling a batch is not counted as stalled: handlers wait out
// outages by design, and a restart would not help them.
package health

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// Probe holds a service's readiness and liveness. The zero value is not
// ready (not started) and alive.
type Probe struct {
	// down is why the service's own lifecycle says not ready ("" when
	// ready); nil until SetReady first runs, which reads as not started.
	down atomic.Pointer[string]

	mu    sync.Mutex
	needs []need
	loops []*Loop
}

type need struct {
	name  string
	check func() error
}

var errNotStarted = errors.New("not started")

// SetReady flips the service's own readiness; shutdown sets it false
// first so load balancers stop sending work before anything closes.
func (p *Probe) SetReady(v bool) {
	if v {
		p.SetNotReady("")
		return
	}
	p.SetNotReady("stopping")
}

// SetNotReady marks the service not ready for reason ("draining", say);
// an empty reason marks it ready, as far as its own lifecycle goes.
func (p *Probe) SetNotReady(reason string) { p.down.Store(&reason) }

// Need adds a dependency readiness requires: check returns why it is not
// ready, or nil. It must be cheap and must not block.
func (p *Probe) Need(name string, check func() error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.needs = append(p.needs, need{name, check})
}

// NotReady is nil when the service is ready, else why not: its lifecycle
// first, then the first dependency not ready, by name.
func (p *Probe) NotReady() error {
	switch d := p.down.Load(); {
	case d == nil:
		return errNotStarted
	case *d != "":
		return errors.New(*d)
	}
	p.mu.Lock()
	needs := p.needs
	p.mu.Unlock()
	for _, n := range needs {
		if err := n.check(); err != nil {
			return fmt.Errorf("%s: %w", n.name, err)
		}
	}
	return nil
}

// Ready reports whether NotReady is nil.
func (p *Probe) Ready() bool { return p.NotReady() == nil }

// Loop is one loop liveness watches. A loop checks in with Beat each
// round, marks the stretches it spends handling work with Busy, and ends
// with Done.
type Loop struct {
	name  string
	stall time.Duration
	// last is the latest check-in (unix nanos); busy is set while the
	// loop handles work; done once it ended.
	last       atomic.Int64
	busy, done atomic.Bool
}

// Watch adds a loop that must check in at least every stall.
func (p *Probe) Watch(name string, stall time.Duration) *Loop {
	l := &Loop{name: name, stall: stall}
	l.Beat()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.loops = append(p.loops, l)
	return l
}

// Beat checks in. Safe on a nil *Loop (nothing watches it).
func (l *Loop) Beat() {
	if l != nil {
		l.last.Store(time.Now().UnixNano())
	}
}

// Busy marks the loop handling work (true) or back to its loop (false);
// either checks in.
func (l *Loop) Busy(v bool) {
	if l != nil {
		l.busy.Store(v)
		l.Beat()
	}
}

// Done stops watching the loop: it ended on purpose.
func (l *Loop) Done() {
	if l != nil {
		l.done.Store(true)
	}
}

// stalled is why the loop counts as stalled at now, or nil.
func (l *Loop) stalled(now time.Time) error {
	if l.done.Load() || l.busy.Load() {
		return nil
	}
	if since := now.Sub(time.Unix(0, l.last.Load())); since > l.stall {
		return fmt.Errorf("%s: no progress for %s (bound %s)", l.name, since.Round(time.Second), l.stall)
	}
	return nil
}

// Alive is nil unless a watched loop stalled.
func (p *Probe) Alive() error {
	p.mu.Lock()
	loops := p.loops
	p.mu.Unlock()
	now := time.Now()
	for _, l := range loops {
		if err := l.stalled(now); err != nil {
			return err
		}
	}
	return nil
}

// Checker is what the probe endpoints ask; *Probe is one.
type Checker interface {
	NotReady() error
	Alive() error
}

// Register adds /healthz (liveness) and /readyz (readiness) for c to mux.
// A probe that fails answers 503 with the reason in the body.
func Register(mux *http.ServeMux, c Checker) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := c.Alive(); err != nil {
			http.Error(w, "stalled: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := c.NotReady(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
}

// Metrics serves h, a service's own metrics registry, at GET /metrics on
// the probes' mux: one address for the orchestrator and the scraper.
func Metrics(mux *http.ServeMux, h http.Handler) {
	mux.Handle("GET /metrics", h)
}

// Pinger keeps the latest answer of a periodic check of something remote
// (a Kafka ping, a Cassandra query), for a readiness check to read.
type Pinger struct {
	// err is the latest answer; nil before the first.
	err atomic.Pointer[error]
}

var errNotChecked = errors.New("not checked yet")

// Ping runs ping now and then every every until ctx ends, each bounded by
// every (a ping that hangs is a failure), keeping its answer.
func Ping(ctx context.Context, every time.Duration, ping func(ctx context.Context) error) *Pinger {
	p := &Pinger{}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			pctx, cancel := context.WithTimeout(ctx, every)
			err := ping(pctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			p.set(err)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *Pinger) set(err error) { p.err.Store(&err) }

// Err is the latest answer: nil if it succeeded.
func (p *Pinger) Err() error {
	e := p.err.Load()
	if e == nil {
		return errNotChecked
	}
	return *e
}

// ConnState follows a gRPC connection's state and fails while its latest
// attempt to connect failed (TRANSIENT_FAILURE), until one succeeds. A
// connection never tried yet counts as reachable: gRPC connects on first
// use, and the watch asks it to connect now.
type ConnState struct {
	failed atomic.Bool
	target string
}

// WatchConn starts following c until ctx ends or c is closed.
func WatchConn(ctx context.Context, c *grpc.ClientConn) *ConnState {
	s := &ConnState{target: c.Target()}
	c.Connect()
	go func() {
		for st := c.GetState(); ; st = c.GetState() {
			switch st {
			case connectivity.Ready:
				s.failed.Store(false)
			case connectivity.TransientFailure, connectivity.Shutdown:
				s.failed.Store(true)
			}
			if st == connectivity.Shutdown || !c.WaitForStateChange(ctx, st) {
				return
			}
		}
	}()
	return s
}

// Err is nil unless the latest attempt to connect failed.
func (s *ConnState) Err() error {
	if s.failed.Load() {
		return fmt.Errorf("%s unreachable", s.target)
	}
	return nil
}
