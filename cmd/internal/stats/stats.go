// Package stats summarises latency samples for the tools that measure
// Parley from outside (parley-bench, parley-chaos).
package stats

import (
	"math"
	"os"
	"slices"
	"strings"
)

// Percentiles of a latency sample, in milliseconds.
type Percentiles struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// Of sorts xs in place and reads the nearest-rank percentiles.
func Of(xs []float64) Percentiles {
	if len(xs) == 0 {
		return Percentiles{}
	}
	slices.Sort(xs)
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return Percentiles{
		N: len(xs), Mean: Round3(sum / float64(len(xs))),
		P50: rank(xs, 0.50), P90: rank(xs, 0.90), P99: rank(xs, 0.99), P999: rank(xs, 0.999),
		Max: Round3(xs[len(xs)-1]),
	}
}

// rank is the nearest-rank percentile q of sorted xs.
func rank(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return Round3(sorted[max(0, min(i, len(sorted)-1))])
}

// Round3 rounds to three decimals, so reports stay readable.
func Round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// Loadavg is the machine's 1, 5 and 15 minute load averages
// ("0.80 0.37 0.14"): every figure measured on a shared machine is read
// against it.
func Loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
