package main

import (
	"math"
	"slices"
)

// percentiles of a latency sample, in milliseconds.
type percentiles struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// percentilesOf sorts xs in place and reads the nearest-rank percentiles.
func percentilesOf(xs []float64) percentiles {
	if len(xs) == 0 {
		return percentiles{}
	}
	slices.Sort(xs)
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return percentiles{
		N: len(xs), Mean: round3(sum / float64(len(xs))),
		P50: rank(xs, 0.50), P90: rank(xs, 0.90), P99: rank(xs, 0.99), P999: rank(xs, 0.999),
		Max: round3(xs[len(xs)-1]),
	}
}

// rank is the nearest-rank percentile q of sorted xs.
func rank(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return round3(sorted[max(0, min(i, len(sorted)-1))])
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round3(a / b)
}
