package metrics

import (
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	dto "github.com/prometheus/client_model/go"
)

// TestBuildInfoCommit: the commit label is the linker's value when make
// or the Dockerfile set it, else the VCS revision the go command stamped
// (marked -dirty for a modified tree), else "unknown"; never empty.
func TestBuildInfoCommit(t *testing.T) {
	stamped := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "false"},
	}}
	dirty := &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"},
	}}
	for _, tc := range []struct {
		name        string
		linker      Build
		info        *debug.BuildInfo
		commit, ver string
	}{
		{"linker wins", Build{Commit: "feedface", Version: "v9"}, stamped, "feedface", "v9"},
		{"vcs stamp", Build{}, stamped, "0123abcd", ""},
		{"dirty tree", Build{}, dirty, "0123abcd-dirty", "v1.2.3"},
		{"nothing", Build{}, &debug.BuildInfo{}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := fromBuildInfo(tc.linker, tc.info)
			if b.Commit != tc.commit || b.Version != tc.ver {
				t.Fatalf("got commit %q version %q, want %q %q", b.Commit, b.Version, tc.commit, tc.ver)
			}
		})
	}

	// What -ldflags "-X ...metrics.Commit=..." sets reaches the label.
	defer func(c, v string) { Commit, Version = c, v }(Commit, Version)
	Commit, Version = "c0ffee", "v0.1.0"
	reg := NewRegistry()
	ForService(reg, "ingest")
	series := gatherOne(t, reg, "parley_build_info")
	if len(series) != 1 {
		t.Fatalf("parley_build_info has %d series, want 1", len(series))
	}
	got := labels(series[0])
	if got["commit"] != "c0ffee" || got["version"] != "v0.1.0" || got["service"] != "ingest" || !strings.HasPrefix(got["go_version"], "go") || series[0].GetGauge().GetValue() != 1 {
		t.Fatalf("parley_build_info = %v %v", got, series[0].GetGauge().GetValue())
	}
	// Built by go test: no linker value, no VCS stamp (the workspace
	// has none), so "unknown" stands in rather than an empty label.
	Commit, Version = "", ""
	if b := BuildOf(); b.Commit == "" || b.Version == "" {
		t.Fatalf("BuildOf() = %+v: empty labels", b)
	}
}

// TestObserveStage: the span from acceptance is observed; a clock behind
// the acceptance counts as 0, an event without a time not at all.
func TestObserveStage(t *testing.T) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: []float64{0, 1, 10}})
	now := time.Unix(1_000_000, 0)
	ObserveStage(h, now.Add(-2*time.Second), now)
	ObserveStage(h, now.Add(time.Second), now)
	ObserveStage(h, time.Time{}, now)
	ObserveStage(h, time.Unix(0, 0), now)
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	if n, sum := m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum(); n != 2 || sum != 2 {
		t.Fatalf("observed %d spans summing %vs, want 2 summing 2s", n, sum)
	}
}

// TestLag: each partition's lag is its high watermark less the offset
// after the last record fetched; a partition fetched without records
// keeps its last value; forgotten partitions disappear.
func TestLag(t *testing.T) {
	reg := NewRegistry()
	m := ForService(reg, "fanout")
	part := func(p int32, hwm int64, offsets ...int64) kgo.FetchPartition {
		fp := kgo.FetchPartition{Partition: p, HighWatermark: hwm}
		for _, o := range offsets {
			fp.Records = append(fp.Records, &kgo.Record{Topic: "t", Partition: p, Offset: o})
		}
		return fp
	}
	fetches := func(ps ...kgo.FetchPartition) kgo.Fetches {
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "t", Partitions: ps}}}}
	}
	m.Lag.Observe("g", fetches(part(0, 10, 3, 4), part(1, 5, 4)))
	m.Lag.Observe("g", fetches(part(1, 9)))
	if got := lags(t, reg); got["0"] != 5 || got["1"] != 0 || len(got) != 2 {
		t.Fatalf("lag = %v, want 0:5 1:0", got)
	}
	m.Lag.Forget("g", map[string][]int32{"t": {0}})
	if got := lags(t, reg); len(got) != 1 || got["1"] != 0 {
		t.Fatalf("lag after forgetting partition 0 = %v", got)
	}
}

func lags(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range gatherOne(t, reg, "parley_consumer_lag") {
		l := labels(m)
		if l["group"] != "g" || l["topic"] != "t" || l["service"] != "fanout" {
			t.Fatalf("lag series labels %v", l)
		}
		out[l["partition"]] = m.GetGauge().GetValue()
	}
	return out
}

// TestMerged: registries merge into one exposition; a family several
// services have keeps each one's series, and series alike in every
// registry (the process's) are kept once.
func TestMerged(t *testing.T) {
	a, b := NewRegistry(), NewRegistry()
	ForService(a, "edge").BatchSize(BatchEventsPerFrame).Observe(3)
	ForService(b, "fanout").BatchSize(BatchDeliveriesPerPush).Observe(2)
	mfs, err := Merged(a, b).Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	if n := len(byName["parley_batch_size"].GetMetric()); n != 2 {
		t.Fatalf("parley_batch_size has %d series, want one per service", n)
	}
	if n := len(byName["parley_build_info"].GetMetric()); n != 2 {
		t.Fatalf("parley_build_info has %d series, want one per service", n)
	}
	if n := len(byName["go_goroutines"].GetMetric()); n != 1 {
		t.Fatalf("go_goroutines has %d series, want 1", n)
	}
	// The handler serves it as a valid exposition.
	rec := httptest.NewRecorder()
	Handler(Merged(a, b)).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `parley_batch_size_count{kind="deliveries_per_push",service="fanout"} 1`) {
		t.Fatalf("GET /metrics: %d\n%s", rec.Code, rec.Body)
	}
}

func gatherOne(t *testing.T, g prometheus.Gatherer, name string) []*dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}
