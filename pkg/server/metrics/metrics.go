// Package metrics builds what every service serves at /metrics: a registry
// of its own, not the global one (the embedded platform runs every service
// in one process, and each must keep its own counts), and the counters the
// consumers of Parley's topics share.
package metrics

import (
	"log/slog"
	"net/http"
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry is a service's registry, with the Go runtime and process
// collectors. The runtime's scheduling latency (go_sched_latencies_seconds:
// how long goroutines waited runnable before they ran) is added to the
// defaults: when a saturated process slows every request, it is the
// figure that says so.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/sched/latencies:seconds$`)},
		)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves g (a service's registry, or Merged ones) in the
// Prometheus text format.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// DeadLetters registers parley_dead_letters_total{service, reason} on reg.
// Every reason is exported from the start, so that a rate over it exists
// before the first dead letter.
func DeadLetters(reg *prometheus.Registry, service, help string, reasons ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_dead_letters_total", ConstLabels: prometheus.Labels{"service": service}, Help: help,
	}, []string{"reason"})
	for _, r := range reasons {
		c.WithLabelValues(r)
	}
	reg.MustRegister(c)
	return c
}

// EventConsumer counts what a consumer of the event log did not use: the
// records it set aside and the events it skipped as copies; and the holes
// it met.
type EventConsumer struct {
	DeadLetters *prometheus.CounterVec
	StaleEvents prometheus.Counter
	Gaps        *Gaps
}

// NewEventConsumer registers both counters of service on reg; reasons are
// those its dead letters may carry.
func NewEventConsumer(reg *prometheus.Registry, service, deadLetterHelp string, reasons ...string) *EventConsumer {
	stale := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_stale_events_total", ConstLabels: prometheus.Labels{"service": service},
		Help: "Events skipped because their conversation's seq was already handled (copies from a zombie sequencer).",
	})
	reg.MustRegister(stale)
	return &EventConsumer{DeadLetters: DeadLetters(reg, service, deadLetterHelp, reasons...), StaleEvents: stale, Gaps: NewGaps(reg, service)}
}

// DeadLetter counts one record set aside for reason.
func (c *EventConsumer) DeadLetter(reason string) { c.DeadLetters.WithLabelValues(reason).Inc() }

// Stale counts n events skipped as copies.
func (c *EventConsumer) Stale(n int) { c.StaleEvents.Add(float64(n)) }

// Gap counts, and logs once per conversation, the hole from..to in conv.
func (c *EventConsumer) Gap(log *slog.Logger, conv string, from, to uint64) {
	c.Gaps.Report(log, conv, from, to)
}
