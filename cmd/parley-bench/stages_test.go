package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStagesBetween(t *testing.T) {
	before := parseStages([]byte(`# HELP parley_event_stage_seconds x
parley_event_stage_seconds_bucket{service="edge",stage="written",le="0.001"} 10
parley_event_stage_seconds_bucket{service="edge",stage="written",le="0.002"} 10
parley_event_stage_seconds_bucket{service="edge",stage="written",le="0.004"} 10
parley_event_stage_seconds_bucket{service="edge",stage="written",le="+Inf"} 10
parley_event_stage_seconds_count{service="edge",stage="written"} 10
`))
	// 100 more: 60 at or under 1 ms, 39 under 2 ms, one under 4 ms,
	// written by two services whose series add up.
	after := parseStages([]byte(`parley_event_stage_seconds_bucket{service="edge",stage="written",le="0.001"} 40
parley_event_stage_seconds_bucket{service="edge",stage="written",le="0.002"} 79
parley_event_stage_seconds_bucket{service="edge",stage="written",le="0.004"} 80
parley_event_stage_seconds_bucket{service="edge",stage="written",le="+Inf"} 80
parley_event_stage_seconds_bucket{service="edge2",stage="written",le="0.001"} 30
parley_event_stage_seconds_bucket{service="edge2",stage="written",le="0.002"} 30
parley_event_stage_seconds_bucket{service="edge2",stage="written",le="0.004"} 30
parley_event_stage_seconds_bucket{service="edge2",stage="written",le="+Inf"} 30
parley_event_stage_seconds_bucket{service="ingest",stage="sequenced",le="0.001"} 0
parley_event_stage_seconds_bucket{service="ingest",stage="sequenced",le="+Inf"} 3
go_sched_latencies_seconds_bucket{le="1e-05"} 50
go_sched_latencies_seconds_bucket{le="0.001"} 98
go_sched_latencies_seconds_bucket{le="0.01"} 100
go_sched_latencies_seconds_bucket{le="+Inf"} 100
`))
	got := stagesBetween(before, after)
	if w := got["written"]; w != (stageWindow{N: 100, P50Ms: 1, P99Ms: 2}) {
		t.Errorf("written = %+v, want 100 events, p50 ≤ 1 ms, p99 ≤ 2 ms", w)
	}
	// Beyond the last finite bucket: -1, as JSON cannot carry +Inf.
	if w := got["sequenced"]; w != (stageWindow{N: 3, P50Ms: -1, P99Ms: -1}) {
		t.Errorf("sequenced = %+v, want 3 events past the last bucket", w)
	}
	// The scheduler's histogram rides along as a stage of its own.
	if w := got["go_sched_latency"]; w != (stageWindow{N: 100, P50Ms: 0.01, P99Ms: 10}) {
		t.Errorf("go_sched_latency = %+v, want 100 waits, p50 ≤ 0.01 ms, p99 ≤ 10 ms", w)
	}
}

func TestKafkaBetween(t *testing.T) {
	a, b := kafkaCounts{}, kafkaCounts{}
	parseKafka([]byte(`parley_kafka_request_duration_e2e_seconds_count{client="producer",node_id="0",service="ingest"} 10
parley_kafka_request_duration_e2e_seconds_count{client="producer",node_id="seed_0",service="ingest"} 2
parley_kafka_request_duration_e2e_seconds_sum{client="producer",node_id="0",service="ingest"} 99
`), "ingest", a)
	parseKafka([]byte(`parley_kafka_request_duration_e2e_seconds_count{client="producer",node_id="0",service="ingest"} 210
parley_kafka_request_duration_e2e_seconds_count{client="producer",node_id="seed_0",service="ingest"} 2
`), "ingest", b)
	parseKafka([]byte(`parley_kafka_request_duration_e2e_seconds_count{client="consumer",node_id="0",service="fanout"} 100
`), "fanout", b)
	r := kafkaBetween(a, b, 100)
	if r.RequestsPerMessage != 3 || r.PerMessageByClient["ingest/producer"] != 2 || r.PerMessageByClient["fanout/consumer"] != 1 {
		t.Fatalf("got %+v, want 3 requests per message: 2 of ingest's producer, 1 of fan-out's consumer", r)
	}
}

func TestBisect(t *testing.T) {
	for _, tc := range []struct {
		limit, start float64
		steps        int
		want         float64
	}{
		{limit: 1000, start: 100, steps: 20, want: 1000}, // 100..800 hold, 1600 fails; 1200 fails, 1000 holds, 1100 fails
		{limit: 40, start: 100, steps: 20, want: 38},     // 100 and 50 fail, 25 and 38 hold, 44 and 41 fail
		{limit: 1e9, start: 100, steps: 4, want: 800},    // out of steps, every one held
	} {
		var tried []float64
		got := bisect(t.Context(), tc.start, tc.steps, 1e12, func() int { return len(tried) }, func(rate float64) bool {
			tried = append(tried, rate)
			return rate <= tc.limit
		})
		if got != tc.want {
			t.Errorf("limit %v from %v: knee %v after %v, want %v", tc.limit, tc.start, got, tried, tc.want)
		}
	}
}

// TestBatchMeans: the mean batch of each kind between two scrapes, with
// the series of several processes added up; a kind with no batch in the
// window is left out.
func TestBatchMeans(t *testing.T) {
	a, b := batchCounts{}, batchCounts{}
	parseBatches([]byte(`parley_batch_size_sum{kind="commands_per_txn",service="ingest"} 10
parley_batch_size_count{kind="commands_per_txn",service="ingest"} 10
parley_batch_size_sum{kind="events_per_frame",service="edge"} 7
parley_batch_size_count{kind="events_per_frame",service="edge"} 7
`), a)
	parseBatches([]byte(`parley_batch_size_bucket{kind="commands_per_txn",service="ingest",le="1"} 10
parley_batch_size_sum{kind="commands_per_txn",service="ingest"} 70
parley_batch_size_count{kind="commands_per_txn",service="ingest"} 20
parley_batch_size_sum{kind="deliveries_per_push",service="fanout"} 30
parley_batch_size_count{kind="deliveries_per_push",service="fanout"} 10
parley_batch_size_sum{kind="events_per_frame",service="edge"} 7
parley_batch_size_count{kind="events_per_frame",service="edge"} 7
`), b)
	parseBatches([]byte(`parley_batch_size_sum{kind="deliveries_per_push",service="fanout"} 10
parley_batch_size_count{kind="deliveries_per_push",service="fanout"} 10
`), b)
	got := batchMeans(a, b)
	want := map[string]float64{"commands_per_txn": 6, "deliveries_per_push": 2}
	if len(got) != len(want) || got["commands_per_txn"] != 6 || got["deliveries_per_push"] != 2 {
		t.Fatalf("batch means %v, want %v", got, want)
	}
}

// TestCassandraBetween: statements and requests per message, writes and
// reads apart, summed over processes.
func TestCassandraBetween(t *testing.T) {
	var a, b cqlCounts
	parseCQL([]byte(`parley_cassandra_statements_total{op="batch_insert_history_events",service="persistence"} 10
parley_cassandra_query_seconds_count{op="batch_insert_history_events",service="persistence"} 5
`), &a)
	parseCQL([]byte(`parley_cassandra_statements_total{op="batch_insert_history_events",service="persistence"} 40
parley_cassandra_statements_total{op="update_conversations",service="persistence"} 20
parley_cassandra_statements_total{op="select_history_events",service="persistence"} 5
parley_cassandra_query_seconds_bucket{op="batch_insert_history_events",service="persistence",le="0.001"} 7
parley_cassandra_query_seconds_count{op="batch_insert_history_events",service="persistence"} 10
parley_cassandra_query_seconds_count{op="update_conversations",service="persistence"} 20
parley_cassandra_query_seconds_count{op="select_history_events",service="persistence"} 5
`), &b)
	got := cassandraBetween(a, b, 10)
	want := cassandraReport{StatementsPerMessage: 5, RequestsPerMessage: 2.5, ReadStatementsPerMessage: 0.5}
	if got == nil || *got != want {
		t.Fatalf("cassandra report %+v, want %+v", got, want)
	}
	if cassandraBetween(a, b, 0) != nil {
		t.Fatal("a report without messages")
	}
}

// TestSaveProfileMakesItsFolder: a profile asked for into a folder that
// does not exist yet (-out of a first storm run) is written, not dropped.
func TestSaveProfileMakesItsFolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "cpu-storm.prof")
	if err := saveProfile(path, []byte("profile")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "profile" {
		t.Fatalf("read back %q, %v", b, err)
	}
}
