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
	wake         chan struct{}
}

func newReporter(client presencev1.PresenceServiceClient, nodeID, pushAddr string, h *hub, log *slog.Logger, beat time.Duration) *reporter {
	return &reporter{client: client, nodeID: nodeID, pushAddr: pushAddr, hub: h, log: log, beat: beat, needSnapshot: true, wake: make(chan struct{}, 1)}
}

// connect reports a new session and returns once presence has it (or the
// report failed), so that every event sequenced after the client is told
// it is authenticated finds this session.
func (r *reporter) connect(ctx context.Context, s *presencev1.Session) error {
	r.mu.Lock()
	r.connected = append(r.connected, s)
	r.mu.Unlock()
	return r.report(ctx)
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
			_ = r.report(fctx)
			cancel()
			return
		case <-r.wake:
			// Let a burst of connects travel as one report.
			time.Sleep(20 * time.Millisecond)
		case <-t.C:
		}
		if err := r.report(ctx); err != nil {
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
// Both kinds are idempotent in the registry, so overlap is harmless.
func (r *reporter) report(ctx context.Context) error {
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
		return err
	case resp.GetSendSnapshot():
		r.needSnapshot = true
		r.poke()
	default:
		r.needSnapshot = false
	}
	return nil
}
