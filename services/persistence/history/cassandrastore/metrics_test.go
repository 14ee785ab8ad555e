package cassandrastore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/services/persistence/history"
	"github.com/parleychat/parley/services/persistence/history/historytest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

func TestOpOf(t *testing.T) {
	for stmt, want := range map[string]string{
		insertEvent:                            "insert_history_events",
		selectAsc:                              "select_history_events",
		updateLast:                             "update_conversations",
		deleteMember:                           "delete_members_by_conversation",
		`INSERT INTO ks.t(a, b) VALUES (?, ?)`: "insert_t",
		`select x from "Quoted" where y = ?`:   "select_quoted",
		`CREATE TABLE IF NOT EXISTS schema_migrations (x int)`: "other",
		``: "other",
	} {
		if got := opOf(stmt); got != want {
			t.Errorf("opOf(%q) = %q, want %q", stmt, got, want)
		}
	}
}

// TestQueryMetricsCount: every observed request is timed under its op,
// and a failed one counted as an error too.
func TestQueryMetricsCount(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewQueryMetrics(reg, "persistence")
	start := time.Unix(100, 0)
	m.ObserveQuery(context.Background(), gocql.ObservedQuery{Statement: selectAsc, Start: start, End: start.Add(3 * time.Millisecond)})
	m.ObserveQuery(context.Background(), gocql.ObservedQuery{Statement: selectAsc, Start: start, End: start.Add(time.Millisecond), Err: errors.New("timeout")})
	m.ObserveBatch(context.Background(), gocql.ObservedBatch{Statements: []string{insertEvent, insertEvent}, Start: start, End: start.Add(time.Millisecond)})
	if n := testutil.CollectAndCount(m.seconds); n != 2 {
		t.Fatalf("%d ops timed, want 2 (select_history_events, batch_insert_history_events)", n)
	}
	if got := testutil.ToFloat64(m.errors.WithLabelValues("select_history_events")); got != 1 {
		t.Fatalf("select errors = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(m.errors); n != 2 {
		t.Fatalf("%d ops with an error series, want 2: every op timed has one, failed or not", n)
	}
	if got := testutil.ToFloat64(m.errors.WithLabelValues("batch_insert_history_events")); got != 0 {
		t.Fatalf("batch errors = %v, want 0", got)
	}
	// A batch counts each of its statements; every attempt of a query one.
	if got := testutil.ToFloat64(m.statements.WithLabelValues("batch_insert_history_events")); got != 2 {
		t.Fatalf("batch statements = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.statements.WithLabelValues("select_history_events")); got != 2 {
		t.Fatalf("select statements = %v, want 2", got)
	}
}

// TestQueryMetricsOnCassandra: a store opened with Metrics reports the
// requests its writes and reads make.
func TestQueryMetricsOnCassandra(t *testing.T) {
	ctx := context.Background()
	s, reg := metricsStore(t)
	conv := "c-metrics"
	if err := s.Apply(ctx, []*logv1.EventRecord{
		historytest.Created(conv, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "metrics", "alice", "bob"),
		historytest.Posted(conv, 2, "alice", "hi"),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.History(ctx, conv, history.Query{Limit: 10, Viewer: "alice"}); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"batch_insert_history_events", "select_history_events"} {
		n, err := histogramCount(reg, "parley_cassandra_query_seconds", op)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Errorf("op %s: no request timed", op)
		}
	}
}

func histogramCount(g prometheus.Gatherer, name, op string) (uint64, error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == op {
					return m.GetHistogram().GetSampleCount(), nil
				}
			}
		}
	}
	return 0, nil
}

// TestPostStatements: a message posted alone costs four statements: its
// event, then one batch on the conversation's partition holding one
// summary update (last seq and preview together; they were two) and the
// poster's read and delivered positions.
func TestPostStatements(t *testing.T) {
	ctx := context.Background()
	s, reg := metricsStore(t)
	conv := "c-post"
	if err := s.Apply(ctx, []*logv1.EventRecord{
		historytest.Created(conv, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "post", "alice", "bob"),
	}); err != nil {
		t.Fatal(err)
	}
	byOp := func() map[string]float64 { return statementsByOp(t, reg) }
	before := byOp()
	if err := s.Apply(ctx, []*logv1.EventRecord{historytest.Posted(conv, 2, "alice", "hi")}); err != nil {
		t.Fatal(err)
	}
	var got float64
	diff := map[string]float64{}
	for op, n := range byOp() {
		if d := n - before[op]; d != 0 {
			diff[op] = d
			got += d
		}
	}
	if got != 4 {
		t.Errorf("one post wrote %v statements (%v), want 4", got, diff)
	}
}

// statementsByOp is parley_cassandra_statements_total of reg by op.
func statementsByOp(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	n := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "parley_cassandra_statements_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" {
					n[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// TestHistoryWithKnownLastSeq: a query that brings the last seq (as
// PersistenceService.History does, from the summary it authorized with)
// gets the same page without reading the conversations row again.
func TestHistoryWithKnownLastSeq(t *testing.T) {
	ctx := context.Background()
	s, reg := metricsStore(t)
	conv := "c-known"
	recs := []*logv1.EventRecord{historytest.Created(conv, chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "known", "alice", "bob")}
	for seq := uint64(2); seq <= 6; seq++ {
		recs = append(recs, historytest.Posted(conv, seq, "alice", "m"))
	}
	if err := s.Apply(ctx, recs); err != nil {
		t.Fatal(err)
	}
	read := func(q history.Query) (history.Page, float64) {
		before := statementsByOp(t, reg)["select_conversations"]
		page, err := s.History(ctx, conv, q)
		if err != nil {
			t.Fatal(err)
		}
		return page, statementsByOp(t, reg)["select_conversations"] - before
	}
	for _, q := range []history.Query{{Limit: 3}, {Limit: 3, BeforeSeq: 4}, {Forward: true, AfterSeq: 2, Limit: 2}} {
		plain, n := read(q)
		if n != 1 {
			t.Fatalf("%+v: %v reads of conversations, want 1 (its last seq)", q, n)
		}
		q.LastSeq = 6
		known, n := read(q)
		if n != 0 {
			t.Errorf("%+v: %v reads of conversations, want none", q, n)
		}
		if fmt.Sprint(seqs(plain)) != fmt.Sprint(seqs(known)) || plain.HasMore != known.HasMore {
			t.Errorf("%+v: page %v (more %v), want %v (more %v) as without it", q, seqs(known), known.HasMore, seqs(plain), plain.HasMore)
		}
	}
}

func seqs(p history.Page) []uint64 {
	out := make([]uint64, 0, len(p.Events))
	for _, ev := range p.Events {
		out = append(out, ev.GetSeq())
	}
	return out
}

// metricsStore opens a store on a fresh migrated keyspace, with its
// query metrics on the registry it returns; both closed with t.
func metricsStore(t *testing.T) (*Store, *prometheus.Registry) {
	t.Helper()
	h := newHarness(t)
	ctx := context.Background()
	cfg := h.cfg
	cfg.Keyspace = testKeyspace()
	h.dropLater(t, cfg.Keyspace)
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg.Metrics = NewQueryMetrics(reg, "persistence")
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, reg
}
