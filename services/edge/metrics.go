package edge

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler serves the node's counters from a registry of its own
// (the embedded platform runs several services in one process). The
// counters are atomics on the hot path, read here only when scraped.
func (s *Service) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	service := prometheus.Labels{"service": "edge"}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "parley_ephemeral_shed_total", ConstLabels: service,
			Help: "Receipts and typing indicators not written to a connection because its queue was filling up with events.",
		}, func() float64 { return float64(s.shedEphemeral.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "parley_resyncs_total", ConstLabels: service,
			Help: "Connections closed with 4000 (resync) for letting their queue fill up.",
		}, func() float64 { return float64(s.resyncs.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "parley_connections", ConstLabels: service,
			Help: "Open WebSocket connections, authenticated or not.",
		}, func() float64 {
			s.liveMu.Lock()
			defer s.liveMu.Unlock()
			return float64(len(s.live))
		}),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
