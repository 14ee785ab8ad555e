package edge

import (
	"testing"
	"time"
)

// TestDrainSchedule: batches are spread evenly over the window, never
// closer than drainSpacing, one per connection when they are few, and a
// zero window closes everything at once.
func TestDrainSchedule(t *testing.T) {
	for _, tc := range []struct {
		n              int
		window         time.Duration
		batches        int
		every          time.Duration
		firstBatchSize int
	}{
		{n: 0, window: 10 * time.Second, batches: 1, every: 0},
		{n: 5, window: 0, batches: 1, every: 0, firstBatchSize: 5},
		{n: 1, window: 10 * time.Second, batches: 1, every: 10 * time.Second, firstBatchSize: 1},
		{n: 12, window: 2 * time.Second, batches: 12, every: 2 * time.Second / 12, firstBatchSize: 1},
		{n: 10000, window: 10 * time.Second, batches: 100, every: 100 * time.Millisecond, firstBatchSize: 100},
		{n: 1000, window: 50 * time.Millisecond, batches: 1, every: 50 * time.Millisecond, firstBatchSize: 1000},
	} {
		batches, every := drainSchedule(tc.n, tc.window)
		if batches != tc.batches || every != tc.every {
			t.Errorf("drainSchedule(%d, %s) = %d batches every %s, want %d every %s", tc.n, tc.window, batches, every, tc.batches, tc.every)
			continue
		}
		// drain's slicing covers every connection once.
		covered := 0
		for i := range batches {
			lo, hi := tc.n*i/batches, tc.n*(i+1)/batches
			if i == 0 && tc.n > 0 && hi-lo != tc.firstBatchSize {
				t.Errorf("n=%d: first batch %d, want %d", tc.n, hi-lo, tc.firstBatchSize)
			}
			covered += hi - lo
		}
		if covered != tc.n {
			t.Errorf("n=%d: batches cover %d", tc.n, covered)
		}
	}
}
