package fanout

import (
	"net/http"

	"github.com/parleychat/parley/pkg/topics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics live in the service's own registry, not the global one, so the
// services of the embedded platform (one process) and of tests keep
// separate counts.
type metrics struct {
	reg         *prometheus.Registry
	deadLetters *prometheus.CounterVec
	stale       prometheus.Counter
}

func newMetrics() *metrics {
	service := prometheus.Labels{"service": "fanout"}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_dead_letters_total", ConstLabels: service,
			Help: "Event records set aside on " + topics.DeadLetter + " instead of pushed, by reason.",
		}, []string{"reason"}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_stale_events_total", ConstLabels: service,
			Help: "Events skipped because their conversation's seq was already handled (copies from a zombie sequencer).",
		}),
	}
	// Every reason is exported from the start, so a rate over it exists
	// before the first dead letter.
	for _, r := range []string{topics.ReasonUndecodable, topics.ReasonEmpty, topics.ReasonInvalid} {
		m.deadLetters.WithLabelValues(r)
	}
	m.reg.MustRegister(m.deadLetters, m.stale,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Metrics serves the service's metrics in the Prometheus text format.
func (s *Service) Metrics() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}
