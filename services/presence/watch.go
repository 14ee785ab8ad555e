package presence

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// WatchLease is how long a watcher (fan-out) may trust the locations it
// cached, counted from when it asked for the lease. Short, because a
// report opening a session waits up to this long when a watcher stops
// answering.
const WatchLease = 2 * time.Second

// watchAckTimeout bounds how long a report waits for a watcher to
// acknowledge an invalidation before it gives up on that watcher and waits
// out its lease instead.
const watchAckTimeout = time.Second

type watchStream = grpc.BidiStreamingServer[presencev1.WatchLocationsRequest, presencev1.WatchLocationsResponse]

// watcher is one WatchLocations stream.
type watcher struct {
	stream watchStream
	// sendMu serialises sends: a stream takes one sender at a time.
	sendMu sync.Mutex
	// kill is closed to end the stream of a watcher that missed an
	// invalidation; gone is closed when its stream has ended.
	kill, gone chan struct{}

	// Guarded by watchers.mu.
	leaseUntil time.Time
	acked      uint64
	ackCh      chan struct{} // closed and replaced on every ack
	revoked    bool
}

func (w *watcher) send(m *presencev1.WatchLocationsResponse) error {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.stream.Send(m)
}

// watchers holds the location watchers of one presence instance. Leases
// use the process's own monotonic clock: the watcher counts its lease from
// before the request, this side from after it, so this side's view of a
// lease always ends last.
type watchers struct {
	lease, ackTimeout time.Duration
	log               *slog.Logger

	mu  sync.Mutex
	set map[*watcher]struct{}
	seq uint64
	// fenceUntil is when the last lease of a watcher that is gone or
	// revoked runs out (and, at start, when a lease granted by this
	// instance's previous incarnation would): a report opening a session
	// waits for it, since that watcher may still trust a stale cache.
	fenceUntil time.Time
}

func newWatchers(lease, ackTimeout time.Duration, log *slog.Logger) *watchers {
	return &watchers{lease: lease, ackTimeout: ackTimeout, log: log, set: map[*watcher]struct{}{},
		fenceUntil: time.Now().Add(lease)}
}

// WatchLocations implements PresenceService: it grants leases while the
// watcher keeps acknowledging invalidations.
func (s *Service) WatchLocations(stream watchStream) error {
	w := s.watch.add(stream)
	defer s.watch.remove(w)
	type recv struct {
		m   *presencev1.WatchLocationsRequest
		err error
	}
	in := make(chan recv, 1)
	go func() {
		for {
			m, err := stream.Recv()
			select {
			case in <- recv{m, err}:
			case <-w.gone:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		select {
		case <-w.kill:
			return status.Error(codes.Aborted, "an invalidation went unacknowledged: the lease is revoked")
		case r := <-in:
			if errors.Is(r.err, io.EOF) {
				return nil
			}
			if r.err != nil {
				return r.err
			}
			if a := r.m.GetAck(); a > 0 {
				s.watch.ack(w, a)
			}
			if id := r.m.GetLeaseRequest(); id > 0 && s.watch.grant(w) {
				if err := w.send(&presencev1.WatchLocationsResponse{LeaseGranted: id, Lease: durationpb.New(s.watch.lease)}); err != nil {
					return err
				}
			}
		}
	}
}

func (ws *watchers) add(stream watchStream) *watcher {
	w := &watcher{stream: stream, kill: make(chan struct{}), gone: make(chan struct{}), ackCh: make(chan struct{})}
	ws.mu.Lock()
	ws.set[w] = struct{}{}
	ws.mu.Unlock()
	return w
}

// remove forgets a watcher whose stream ended; its lease may still run, so
// reports fence on it.
func (ws *watchers) remove(w *watcher) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if _, ok := ws.set[w]; !ok {
		return
	}
	delete(ws.set, w)
	close(w.gone)
	if w.leaseUntil.After(ws.fenceUntil) {
		ws.fenceUntil = w.leaseUntil
	}
}

// grant renews w's lease unless it was revoked. The lease is set before
// the grant is sent, so it covers the watcher's.
func (ws *watchers) grant(w *watcher) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if w.revoked {
		return false
	}
	w.leaseUntil = time.Now().Add(ws.lease)
	return true
}

func (ws *watchers) ack(w *watcher, n uint64) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if n > w.acked {
		w.acked = n
		close(w.ackCh)
		w.ackCh = make(chan struct{})
	}
}

// revoke stops renewing w's lease and ends its stream; reports fence on
// the lease it still holds.
func (ws *watchers) revoke(w *watcher) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if w.revoked {
		return
	}
	w.revoked = true
	close(w.kill)
	if w.leaseUntil.After(ws.fenceUntil) {
		ws.fenceUntil = w.leaseUntil
	}
}

// closeAll ends every watcher's stream, as revoke does, for a shutdown.
func (ws *watchers) closeAll() {
	ws.mu.Lock()
	all := make([]*watcher, 0, len(ws.set))
	for w := range ws.set {
		all = append(all, w)
	}
	ws.mu.Unlock()
	for _, w := range all {
		ws.revoke(w)
	}
}

// invalidate tells every watcher that users' locations changed. With wait
// (a session opened, or a lapsed node came back), it returns only once
// no watcher can still trust an older answer about them: each acknowledged,
// or its lease ran out.
func (ws *watchers) invalidate(ctx context.Context, users []string, wait bool) error {
	if len(users) == 0 {
		return nil
	}
	ws.mu.Lock()
	ws.seq++
	n := ws.seq
	var all []*watcher
	for w := range ws.set {
		if !w.revoked {
			all = append(all, w)
		}
	}
	ws.mu.Unlock()
	m := &presencev1.WatchLocationsResponse{Invalidation: n, UserIds: users}
	var wg sync.WaitGroup
	for _, w := range all {
		wg.Go(func() {
			if err := w.send(m); err != nil {
				ws.revoke(w)
				return
			}
			if wait && !ws.acknowledged(ctx, w, n) && ctx.Err() == nil {
				ws.log.Warn("presence: a location watcher did not acknowledge an invalidation; revoking its lease", "users", len(users))
				ws.revoke(w)
			}
		})
	}
	wg.Wait()
	if !wait {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ws.mu.Lock()
	fence := ws.fenceUntil
	ws.mu.Unlock()
	if d := time.Until(fence); d > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return nil
}

// acknowledged waits until w acknowledged invalidation n, for at most the
// ack timeout.
func (ws *watchers) acknowledged(ctx context.Context, w *watcher, n uint64) bool {
	timeout := time.NewTimer(ws.ackTimeout)
	defer timeout.Stop()
	for {
		ws.mu.Lock()
		done, ch := w.acked >= n, w.ackCh
		ws.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-ch:
		case <-w.gone:
			return false
		case <-timeout.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
