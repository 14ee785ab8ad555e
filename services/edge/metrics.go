package edge

import (
	"net/http"
	"sync/atomic"

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
	// drained counts connections closed with CloseReconnect by a drain.
	drained atomic.Int64
	// pushed counts the deliveries Push received, by kind: what routing
	// sent this node.
	pushed [pushedKinds]atomic.Int64
}

func newStats(reg *prometheus.Registry) *stats {
	return &stats{reg: reg, gaps: metrics.NewGaps(reg, "edge")}
}

// metricsHandler serves the node's metrics.
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
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "parley_drained_connections_total", ConstLabels: service,
			Help: "Connections closed with 4002 (reconnect elsewhere) while the node drained on shutdown.",
		}, func() float64 { return float64(s.stats.drained.Load()) }),
		pushedCounter(s, pushedEvent, "event"), pushedCounter(s, pushedReceipt, "receipt"), pushedCounter(s, pushedTyping, "typing"),
		pushedCounter(s, pushedFlags, "flags"),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "parley_connections", ConstLabels: service,
			Help: "Open WebSocket connections, authenticated or not.",
		}, func() float64 { return float64(s.live.count()) }),
	)
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
