package metrics

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Gaps counts holes in conversations' seqs: events the sequencer numbered
// that are missing from the log a service reads. The sequencer numbers
// only what it commits, so a hole means records were lost below Parley (a
// broker's fault, or records deleted by hand). Each hole is counted; the
// first of each conversation is logged, so a hole met on every resume does
// not flood the log.
type Gaps struct {
	counter prometheus.Counter
	// mu guards logged, the conversations whose hole was logged (at most
	// maxLogged: past that, holes are only counted).
	mu     sync.Mutex
	logged map[string]struct{}
}

const maxLogged = 10000

// NewGaps registers parley_seq_gaps_total{service} on reg.
func NewGaps(reg prometheus.Registerer, service string) *Gaps {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_seq_gaps_total", ConstLabels: prometheus.Labels{"service": service},
		Help: "Holes met in a conversation's seqs: events missing from the log (see docs/GUARANTEES.md).",
	})
	reg.MustRegister(c)
	return &Gaps{counter: c, logged: map[string]struct{}{}}
}

// Report counts the hole from..to (seqs, inclusive) in conv, and logs it if
// it is the first of conv.
func (g *Gaps) Report(log *slog.Logger, conv string, from, to uint64) {
	g.counter.Inc()
	g.mu.Lock()
	_, seen := g.logged[conv]
	first := !seen && len(g.logged) < maxLogged
	if first {
		g.logged[conv] = struct{}{}
	}
	g.mu.Unlock()
	if first {
		log.Error("events missing from the log: the conversation goes on after them", "conversation", conv, "from_seq", from, "to_seq", to)
	}
}
