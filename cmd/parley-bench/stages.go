package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// stageCounts are the cumulative bucket counts of
// parley_event_stage_seconds by stage, summed over the services of one
// process: le (seconds) → events at or under it.
type stageCounts map[string]map[float64]float64

// scrapeStages reads the stage histograms from a process's /metrics.
func scrapeStages(ctx context.Context, adminAddr string) (stageCounts, error) {
	body, err := fetchMetrics(ctx, adminAddr)
	if err != nil {
		return nil, err
	}
	return parseStages(body), nil
}

// fetchMetrics reads a process's /metrics page.
func fetchMetrics(ctx context.Context, adminAddr string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", adminAddr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", adminAddr, err)
	}
	return body, nil
}

func parseStages(body []byte) stageCounts {
	out := stageCounts{}
	eachSample(body, func(name, labels string, n float64) {
		var stage string
		switch name {
		case "parley_event_stage_seconds_bucket":
			stage = label(labels, "stage")
		case "go_sched_latencies_seconds_bucket":
			// The process's scheduling latency, kept beside the stages
			// as if it were one: how long a runnable goroutine waited.
			stage = "go_sched_latency"
		}
		le := label(labels, "le")
		if stage == "" || le == "" {
			return
		}
		bound := math.Inf(1)
		if le != "+Inf" {
			var err error
			if bound, err = strconv.ParseFloat(le, 64); err != nil {
				return
			}
		}
		if out[stage] == nil {
			out[stage] = map[float64]float64{}
		}
		out[stage][bound] += n
	})
	return out
}

func label(labels, name string) string {
	_, v, ok := strings.Cut(labels, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ = strings.Cut(v, `"`)
	return v
}

// stageWindow is one stage's events between two scrapes: how many, and
// the bucket bounds holding the median and the 99th percentile (an upper
// bound on each, as fine as the buckets are).
type stageWindow struct {
	N     int     `json:"n"`
	P50Ms float64 `json:"p50_le_ms"`
	P99Ms float64 `json:"p99_le_ms"`
}

// stagesBetween is each stage's window from a to b.
func stagesBetween(a, b stageCounts) map[string]stageWindow {
	out := map[string]stageWindow{}
	for stage, bb := range b {
		bounds := make([]float64, 0, len(bb))
		for le := range bb {
			bounds = append(bounds, le)
		}
		sort.Float64s(bounds)
		total := bb[math.Inf(1)] - a[stage][math.Inf(1)]
		if total <= 0 {
			continue
		}
		w := stageWindow{N: int(total)}
		for _, le := range bounds {
			n := bb[le] - a[stage][le]
			if w.P50Ms == 0 && n >= 0.5*total {
				w.P50Ms = boundMs(le)
			}
			if n >= 0.99*total {
				w.P99Ms = boundMs(le)
				break
			}
		}
		out[stage] = w
	}
	return out
}

// boundMs is a bucket bound in milliseconds; -1 stands for +Inf, beyond
// the last bucket, which JSON cannot carry.
func boundMs(le float64) float64 {
	if math.IsInf(le, 1) {
		return -1
	}
	return le * 1000
}
