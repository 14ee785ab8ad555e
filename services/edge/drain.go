package edge

import (
	"context"
	"time"
)

// drainSpacing is the least time between two batches of a drain: a
// window holds at most one batch per spacing, so a short window over many
// connections closes bigger batches rather than a batch every
// microsecond.
const drainSpacing = 100 * time.Millisecond

// drainSchedule splits n connections into batches spread evenly over
// window: batch i (0-based) closes at i*every. A window of 0 (or no
// connections) is one batch, at once.
func drainSchedule(n int, window time.Duration) (batches int, every time.Duration) {
	if n <= 0 || window <= 0 {
		return 1, 0
	}
	batches = min(n, max(1, int(window/drainSpacing)))
	return batches, window / time.Duration(batches)
}

// drain closes the connections live when it starts with CloseReconnect,
// in batches spread over the configured window. The node still serves
// meanwhile: Push keeps delivering to the connections not yet closed, so
// each client gets live events until its own close and resumes the rest
// elsewhere. If ctx ends first, the rest are closed at once.
func (s *Service) drain(ctx context.Context) {
	conns := s.live.snapshot()
	batches, every := drainSchedule(len(conns), s.cfg.Drain)
	s.log.Info("edge draining", "connections", len(conns), "window", s.cfg.Drain, "batches", batches)
	start := time.Now()
	for i := range batches {
		lo, hi := len(conns)*i/batches, len(conns)*(i+1)/batches
		if !sleepUntil(ctx, start.Add(time.Duration(i)*every)) {
			hi = len(conns)
		}
		for _, c := range conns[lo:hi] {
			// Each close waits for the client's answer; none waits for
			// another.
			go c.ws.Close(CloseReconnect, "draining: reconnect elsewhere")
		}
		s.stats.drained.Add(int64(hi - lo))
		if hi == len(conns) {
			return
		}
	}
}

// sleepUntil waits until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
