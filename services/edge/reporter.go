package edge

import (
	"context"
	"log/slog"
	"sync"
	"time"

	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// reporter tells presence which sessions this node holds: deltas as they
// happen, a heartbeat that renews the node's lease, and a full snapshot
// whenever presence does not know the node.
//
// Connects are group-committed: a connect only queues its session and
// wakes the run loop, which sends everything queued in one report as soon
// as the report before it returns. A burst of thousands of handshakes so
// costs a few presence writes, not one each (a synchronous report per
// connect held a node near 260 connects/s).
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
	// mu guards the pending changes, needSnapshot, next and owed.
	mu           sync.Mutex
	connected    []*presencev1.Session
	disconnected []*presencev1.Session
	needSnapshot bool
	// next is the fate of the report that will carry the changes pending
	// now; owed are the taken channels of reports presence did not take,
	// closed by the next report it takes (a snapshot, which holds their
	// sessions).
	next *reportFate
	owed []chan struct{}
	// wake asks for a report after a short gather (disconnects, idle
	// flips); flush asks for one at once (connects, which a handshake
	// waits for).
	wake  chan struct{}
	flush chan struct{}
}

// reportFate is what became of one report: tried is closed when presence
// answered it (or the call failed), taken when presence has its sessions.
type reportFate struct {
	tried, taken chan struct{}
}

func newFate() *reportFate {
	return &reportFate{tried: make(chan struct{}), taken: make(chan struct{})}
}

func newReporter(client presencev1.PresenceServiceClient, nodeID, pushAddr string, h *hub, log *slog.Logger, beat time.Duration) *reporter {
	return &reporter{client: client, nodeID: nodeID, pushAddr: pushAddr, hub: h, log: log, beat: beat, needSnapshot: true,
		next: newFate(), wake: make(chan struct{}, 1), flush: make(chan struct{}, 1)}
}

// connect queues a new session for the next report. Its tried channel is
// closed once that report is answered; its taken channel once presence
// has the session: by that report, or if presence did not take it, by the
// next report it takes (a snapshot of the hub, which holds the session).
// Until then fan-out cannot find the session, so an event sequenced
// meanwhile is pushed to nobody here: a handshake answers only once the
// report was tried, and a resume waits for taken before it asks for the
// heads.
func (r *reporter) connect(s *presencev1.Session) *reportFate {
	r.mu.Lock()
	r.connected = append(r.connected, s)
	fate := r.next
	r.mu.Unlock()
	select {
	case r.flush <- struct{}{}:
	default:
	}
	return fate
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
			// Let a burst of changes travel as one report.
			time.Sleep(20 * time.Millisecond)
		case <-r.flush:
			// Connects waiting: no gather, since the ones that come while
			// this report is in flight travel in the next.
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
	fate := r.next
	r.next = newFate()
	r.mu.Unlock()

	resp, err := r.client.Report(ctx, req)
	r.mu.Lock()
	defer r.mu.Unlock()
	defer close(fate.tried)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.log.Warn("presence report failed; will send a snapshot", "err", err)
		}
		r.needSnapshot = true
		r.owed = append(r.owed, fate.taken)
		return err
	case resp.GetSendSnapshot():
		// Presence did not know this node, so the changes may not have
		// been applied: the snapshot asked for carries them.
		r.needSnapshot = true
		r.owed = append(r.owed, fate.taken)
		select {
		case r.flush <- struct{}{}:
		default:
		}
		return nil
	default:
		r.needSnapshot = false
		close(fate.taken)
		for _, ch := range r.owed {
			close(ch)
		}
		r.owed = nil
		return nil
	}
}
