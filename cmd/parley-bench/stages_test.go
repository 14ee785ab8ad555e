package main

import "testing"

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
`))
	got := stagesBetween(before, after)
	if w := got["written"]; w != (stageWindow{N: 100, P50Ms: 1, P99Ms: 2}) {
		t.Errorf("written = %+v, want 100 events, p50 ≤ 1 ms, p99 ≤ 2 ms", w)
	}
	// Beyond the last finite bucket: -1, as JSON cannot carry +Inf.
	if w := got["sequenced"]; w != (stageWindow{N: 3, P50Ms: -1, P99Ms: -1}) {
		t.Errorf("sequenced = %+v, want 3 events past the last bucket", w)
	}
}
