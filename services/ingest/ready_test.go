package ingest

import "testing"

// TestRebuildingIsNotReady: while a partition's aggregates are rebuilt
// from the log, readiness says so; once done it holds again.
func TestRebuildingIsNotReady(t *testing.T) {
	var s Sequencer
	if err := s.rebuilding(); err != nil {
		t.Fatalf("idle sequencer: %v", err)
	}
	s.loading.Add(2)
	if err := s.rebuilding(); err == nil || err.Error() != "rebuilding 2 partition(s) from the log" {
		t.Fatalf("two partitions rebuilding: %v", err)
	}
	s.loading.Add(-2)
	if err := s.rebuilding(); err != nil {
		t.Fatalf("rebuilt: %v", err)
	}
}
