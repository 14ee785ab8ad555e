package cassandrastore

import (
	"context"
	"strings"

	"github.com/gocql/gocql"
	"github.com/prometheus/client_golang/prometheus"
)

// QueryMetrics times every request the store sends and counts the failed
// ones, by op: the statement's verb and table ("select_messages",
// "insert_conversations_by_user"), and "batch_" before the first
// statement's for a batch. Each attempt counts, a retry too.
type QueryMetrics struct {
	seconds    *prometheus.HistogramVec
	errors     *prometheus.CounterVec
	statements *prometheus.CounterVec
}

var (
	_ gocql.QueryObserver = (*QueryMetrics)(nil)
	_ gocql.BatchObserver = (*QueryMetrics)(nil)
)

// NewQueryMetrics registers parley_cassandra_query_seconds{service,op},
// parley_cassandra_query_errors_total{service,op} and
// parley_cassandra_statements_total{service,op} on reg. Config.Metrics
// takes it.
func NewQueryMetrics(reg prometheus.Registerer, service string) *QueryMetrics {
	labels := prometheus.Labels{"service": service}
	m := &QueryMetrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "parley_cassandra_query_seconds", ConstLabels: labels,
			Help:    "Seconds each Cassandra request (query, page or batch; every attempt) took, by op (verb_table, batch_verb_table).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_cassandra_query_errors_total", ConstLabels: labels,
			Help: "Cassandra requests (every attempt) that failed, by op.",
		}, []string{"op"}),
		statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_cassandra_statements_total", ConstLabels: labels,
			Help: "Statements sent to Cassandra (every attempt; a batch counts each of its statements), by op.",
		}, []string{"op"}),
	}
	reg.MustRegister(m.seconds, m.errors, m.statements)
	return m
}

// ObserveQuery implements gocql.QueryObserver.
func (m *QueryMetrics) ObserveQuery(_ context.Context, q gocql.ObservedQuery) {
	op := opOf(q.Statement)
	m.statements.WithLabelValues(op).Inc()
	m.observe(op, q.End.Sub(q.Start).Seconds(), q.Err)
}

// ObserveBatch implements gocql.BatchObserver.
func (m *QueryMetrics) ObserveBatch(_ context.Context, b gocql.ObservedBatch) {
	op := "batch"
	if len(b.Statements) > 0 {
		op += "_" + opOf(b.Statements[0])
	}
	m.statements.WithLabelValues(op).Add(float64(len(b.Statements)))
	m.observe(op, b.End.Sub(b.Start).Seconds(), b.Err)
}

// observe times a request, and counts it if it failed. An op's error
// series exists from its first request, so that an error rate over it is
// 0 rather than absent.
func (m *QueryMetrics) observe(op string, seconds float64, err error) {
	m.seconds.WithLabelValues(op).Observe(seconds)
	errs := m.errors.WithLabelValues(op)
	if err != nil {
		errs.Inc()
	}
}

// opOf names a statement by its verb and table. The statements are this
// package's constants, so the names are few; what it cannot read is
// "other" rather than a new label value.
func opOf(stmt string) string {
	words := strings.Fields(stmt)
	if len(words) < 2 {
		return "other"
	}
	verb := strings.ToLower(words[0])
	var after string
	switch verb {
	case "select", "delete":
		after = "from"
	case "insert":
		after = "into"
	case "update":
		return verb + "_" + tableName(words[1])
	default:
		return "other"
	}
	for i, w := range words[:len(words)-1] {
		if strings.EqualFold(w, after) {
			return verb + "_" + tableName(words[i+1])
		}
	}
	return "other"
}

// tableName is the table of a FROM, INTO or UPDATE word: no keyspace, no
// column list.
func tableName(w string) string {
	w, _, _ = strings.Cut(w, "(")
	if i := strings.LastIndexByte(w, '.'); i >= 0 {
		w = w[i+1:]
	}
	return strings.ToLower(strings.Trim(w, `"`))
}
