package stats

import "testing"

func TestPercentiles(t *testing.T) {
	xs := make([]float64, 0, 1000)
	for i := 1000; i >= 1; i-- {
		xs = append(xs, float64(i))
	}
	p := Of(xs)
	if p.N != 1000 || p.P50 != 500 || p.P90 != 900 || p.P99 != 990 || p.P999 != 999 || p.Max != 1000 || p.Mean != 500.5 {
		t.Fatalf("percentiles of 1..1000 = %+v", p)
	}
	if (Of(nil) != Percentiles{}) {
		t.Fatal("an empty sample must give zeros")
	}
	if p := Of([]float64{7}); p.P50 != 7 || p.P99 != 7 {
		t.Fatalf("one sample: %+v", p)
	}
}
