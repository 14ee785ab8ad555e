package ingest

import (
	"net/http"

	"github.com/parleychat/parley/pkg/topics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics live in the service's own registry, not the global one, so the
// services of the embedded platform (one process) keep separate counts.
type metrics struct {
	reg         *prometheus.Registry
	deadLetters *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_dead_letters_total", ConstLabels: prometheus.Labels{"service": "ingest"},
			Help: "Command records set aside on " + topics.DeadLetter + " instead of sequenced, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{topics.ReasonUndecodable, topics.ReasonInvalid} {
		m.deadLetters.WithLabelValues(r)
	}
	m.reg.MustRegister(m.deadLetters,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Metrics serves the service's metrics in the Prometheus text format.
func (s *Service) Metrics() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}
