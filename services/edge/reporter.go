package edge

import (
	"context"
	"log/slog"
	"sync"
	"time"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// reporter tells presence which sessions this node holds: deltas as they
// happen (debounced), a heartbeat that renews the node's lease, and a full
// snapshot whenever presence does not know the node.
type reporter struct {
	client   presencev1.PresenceServiceClient
	nodeID   string
	pushAddr string
	hub      *hub
	log      *slog.Logger
	beat     time.Duration

	// sendMu serialises reports, so a snapshot taken before a session was
	// added can never arrive after that session's own report and erase it.
	sendMu sync.Mutex
	// mu guards the pending changes and needSnapshot.
	mu           sync.Mutex
	connected    []*presencev1.Session
	disconnected []*presencev1.Session
	needSnapshot bool
	// taken is closed, and replaced, by each report presence takes: what
	// a session whose own report was not taken waits on.
	taken chan struct{}
	wake  chan struct{}
}

func newReporter(client presencev1.PresenceServiceClient, nodeID, pushAddr string, h *hub, log *slog.Logger, beat time.Duration) *reporter {
	return &reporter{client: client, nodeID: nodeID, pushAddr: pushAddr, hub: h, log: log, beat: beat, needSnapshot: true, taken: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// connect reports a new session. The channel it returns is closed once
// presence has the session: at once if this report is taken, otherwise by
// the next report that is (a snapshot of the hub, which holds the
// session). Until then fan-out cannot find the session, so an event
// sequenced meanwhile is pushed to nobody here: a resume waits for the
// channel before it asks for the heads, and the error says why it has to.
func (r *reporter) connect(ctx context.Context, s *presencev1.Session) (<-chan struct{}, error) {
	r.mu.Lock()
	r.connected = append(r.connected, s)
	r.mu.Unlock()
	pending, err := r.report(ctx)
	if pending == nil {
		taken := make(chan struct{})
		close(taken)
		return taken, nil
	}
	if err != nil {
		// The run loop retries its own failures only; presence may be
		// replaying after a restart and take the snapshot in a moment.
		time.AfterFunc(retryAfter, r.poke)
	}
	return pending, err
}

func (r *reporter) disconnect(s *presencev1.Session) {
	r.mu.Lock()
	r.disconnected = append(r.disconnected, s)
	r.mu.Unlock()
	r.poke()
}

// update reports a session again, its idle flag flipped.
func (r *reporter) update(s *presencev1.Session) {
	r.mu.Lock()
	r.connected = append(r.connected, s)
	r.mu.Unlock()
	r.poke()
}

func (r *reporter) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run reports until ctx ends, then sends what is pending once more.
func (r *reporter) run(ctx context.Context) {
	t := time.NewTicker(r.beat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_, _ = r.report(fctx)
			cancel()
			return
		case <-r.wake:
			// Let a burst of connects travel as one report.
			time.Sleep(20 * time.Millisecond)
		case <-t.C:
		}
		if _, err := r.report(ctx); err != nil {
			// Presence may be restarting: come back sooner than the next
			// heartbeat, so the node's snapshot is there as soon as it
			// serves and it never has to wait for this node's lease.
			time.AfterFunc(retryAfter, r.poke)
		}
	}
}

// retryAfter is how soon a failed report is tried again.
const retryAfter = 300 * time.Millisecond

// report sends the pending changes (or a snapshot) and renews the lease.
// Both kinds are idempotent in the registry, so overlap is harmless. When
// presence did not take the report it returns the channel the next report
// it takes will close; nil when it took this one.
func (r *reporter) report(ctx context.Context) (<-chan struct{}, error) {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	r.mu.Lock()
	req := &presencev1.ReportRequest{NodeId: r.nodeID, PushAddress: r.pushAddr, Snapshot: r.needSnapshot}
	if r.needSnapshot {
		req.Connected = r.hub.sessions()
	} else {
		req.Connected, req.Disconnected = r.connected, r.disconnected
	}
	r.connected, r.disconnected = nil, nil
	r.mu.Unlock()

	resp, err := r.client.Report(ctx, req)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.log.Warn("presence report failed; will send a snapshot", "err", err)
		}
		r.needSnapshot = true
		return r.taken, err
	case resp.GetSendSnapshot():
		// Presence did not know this node, so the changes may not have
		// been applied: the snapshot asked for carries them.
		r.needSnapshot = true
		r.poke()
		return r.taken, nil
	default:
		r.needSnapshot = false
		close(r.taken)
		r.taken = make(chan struct{})
	}
	return nil, nil
}
