package edge

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// stats are the node's counters, in a registry of its own (the embedded
// platform runs several services in one process). They are atomics on
// the hot path, read only when scraped.
type stats struct {
	reg *prometheus.Registry
	// gaps counts the holes resumes met in history (resume.go).
	gaps *metrics.Gaps
	// shedEphemeral counts the state items (receipts, typing, presence,
	// flags) not written to a connection because its queue was filling up
	// with events.
	shedEphemeral atomic.Int64
	// resyncs counts connections dropped for a full queue.
	resyncs atomic.Int64
	// pushed counts the deliveries Push received, by kind: what routing
	// sent this node.
	pushed [pushedKinds]atomic.Int64
	// metrics are the families every service shares; written and
	// perFrame its stage and batch size.
	metrics           *metrics.Service
	written, perFrame prometheus.Observer
}

func newStats(reg *prometheus.Registry) *stats {
	m := metrics.ForService(reg, "edge")
	return &stats{reg: reg, gaps: metrics.NewGaps(reg, "edge"), metrics: m,
		written: m.Stage(metrics.StageWritten), perFrame: m.BatchSize(metrics.BatchEventsPerFrame)}
}

// wrote measures a run of items just written to a socket: the events in
// its events frame, and the written stage of the live ones.
func (st *stats) wrote(run []item) {
	n := 0
	var now time.Time
	for _, it := range run {
		if it.event == nil {
			continue
		}
		n++
		if it.live {
			if now.IsZero() {
				now = time.Now()
			}
			metrics.ObserveStage(st.written, it.event.GetTime().AsTime(), now)
		}
	}
	if n > 0 {
		st.perFrame.Observe(float64(n))
	}
}

// Metrics serves the node's own registry (whatever Config.Metrics says
// /metrics serves).
func (s *Service) Metrics() http.Handler { return metrics.Handler(s.stats.reg) }

// metricsHandler registers the node's counters and serves what /metrics
// serves.
func (s *Service) metricsHandler() http.Handler {
	reg := s.stats.reg
	service := prometheus.Labels{"service": "edge"}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "parley_ephemeral_shed_total", ConstLabels: service,
			Help: "Receipts and typing indicators not written to a connection because its queue was filling up with events.",
		}, func() float64 { return float64(s.stats.shedEphemeral.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "parley_resyncs_total", ConstLabels: service,
			Help: "Connections closed with 4000 (resync) for letting their queue fill up.",
		}, func() float64 { return float64(s.stats.resyncs.Load()) }),
		pushedCounter(s, pushedEvent, "event"), pushedCounter(s, pushedReceipt, "receipt"), pushedCounter(s, pushedTyping, "typing"),
		pushedCounter(s, pushedFlags, "flags"),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "parley_connections", ConstLabels: service,
			Help: "Open WebSocket connections, authenticated or not.",
		}, func() float64 { return float64(s.live.count()) }),
	)
	if s.cfg.Metrics != nil {
		return metrics.Handler(s.cfg.Metrics)
	}
	return metrics.Handler(reg)
}

// Kinds of pushed deliveries.
const (
	pushedEvent = iota
	pushedReceipt
	pushedTyping
	pushedFlags
	pushedKinds
)

func pushedCounter(s *Service, kind int, name string) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "parley_pushed_deliveries_total", ConstLabels: prometheus.Labels{"service": "edge", "kind": name},
		Help: "Deliveries received on Push (from fan-out, or typing from another edge), by kind: one per event, receipt, indicator or flags change, for any number of this node's users.",
	}, func() float64 { return float64(s.stats.pushed[kind].Load()) })
}
