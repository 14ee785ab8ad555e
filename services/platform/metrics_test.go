package platform_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	dto "github.com/prometheus/client_model/go"
)

// want is one expectation of a scrape: a series of family whose labels
// include labels; positive asks for a count (histograms) or value
// (counters, gauges) above zero, not just presence.
type want struct {
	family   string
	labels   map[string]string
	positive bool
}

func present(family string, labels ...string) want { return want{family, pairs(labels), false} }
func nonZero(family string, labels ...string) want { return want{family, pairs(labels), true} }
func pairs(kv []string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// kafka is what every Kafka client of a service exports through kprom
// once it has talked to the cluster.
func kafka(client string) []want {
	return []want{
		nonZero("parley_kafka_connects_total", "client", client),
		nonZero("parley_kafka_write_bytes_total", "client", client),
		nonZero("parley_kafka_read_bytes_total", "client", client),
		nonZero("parley_kafka_request_duration_e2e_seconds", "client", client),
	}
}

// TestMetricsAfterTraffic sends messages through the embedded platform
// and scrapes every service's /metrics: each family the dashboards use is
// there, with the service's label, and what the messages went through
// counted them.
func TestMetricsAfterTraffic(t *testing.T) {
	e, stop := start(t, t.TempDir())
	defer stop()
	ctx := tctx(t)
	a := e.dial("alice", "alice-phone", false)
	b := e.dial("bob", "bob-phone", false)
	acc, err := a.CreateGroup(ctx, "metrics", "bob")
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	conv := acc.GetConversationId()
	const sent = 5
	for i := range sent {
		if _, err := a.Send(ctx, conv, fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	b.upTo(t, conv, 1+sent)
	a.upTo(t, conv, 1+sent)
	// History answered means persistence applied the events and the
	// edge called it.
	waitHistory(t, b.Client, conv, 1+sent)

	common := func(service string) []want {
		return []want{
			present("parley_build_info", "service", service),
			present("go_goroutines"),
		}
	}
	services := []struct {
		name    string
		handler http.Handler
		wants   []want
	}{
		{"ingest", e.p.Ingest.Metrics(), append([]want{
			nonZero("parley_event_stage_seconds", "service", "ingest", "stage", "sequenced"),
			nonZero("parley_batch_size", "service", "ingest", "kind", "commands_per_txn"),
			present("parley_consumer_lag", "service", "ingest", "group", "parley-sequencer", "topic", topics.Commands),
			// The edge's Submits share one SubmitStream, which gRPC's
			// metrics count once it ends: ingest counts its commands.
			nonZero("parley_streamed_submits_total", "service", "ingest", "grpc_code", "OK"),
			present("parley_dead_letters_total", "service", "ingest"),
		}, append(append(kafka("producer"), kafka("sequencer")...), kafka("outcomes")...)...)},
		{"persistence", e.p.Persistence.Metrics(), append([]want{
			nonZero("parley_event_stage_seconds", "service", "persistence", "stage", "persisted"),
			nonZero("parley_batch_size", "service", "persistence", "kind", "events_per_apply"),
			present("parley_consumer_lag", "service", "persistence", "group", "parley-persistence", "topic", topics.Events),
			nonZero("grpc_server_handled_total", "service", "persistence", "grpc_method", "History", "grpc_code", "OK"),
			nonZero("grpc_server_handling_seconds", "service", "persistence"),
			present("parley_dead_letters_total", "service", "persistence"),
			present("parley_stale_events_total", "service", "persistence"),
			present("parley_seq_gaps_total", "service", "persistence"),
		}, kafka("consumer")...)},
		{"fanout", e.p.Fanout.Metrics(), append([]want{
			nonZero("parley_event_stage_seconds", "service", "fanout", "stage", "pushed"),
			nonZero("parley_batch_size", "service", "fanout", "kind", "deliveries_per_push"),
			present("parley_consumer_lag", "service", "fanout", "group", "parley-fanout", "topic", topics.Events),
			nonZero("grpc_client_handled_total", "service", "fanout", "grpc_method", "Push", "grpc_code", "OK"),
			nonZero("grpc_client_handling_seconds", "service", "fanout", "grpc_method", "Push"),
			present("parley_dead_letters_total", "service", "fanout"),
			present("parley_stale_events_total", "service", "fanout"),
			present("parley_seq_gaps_total", "service", "fanout"),
		}, kafka("consumer")...)},
		{"edge", e.p.Edge.Metrics(), []want{
			nonZero("parley_event_stage_seconds", "service", "edge", "stage", "written"),
			nonZero("parley_batch_size", "service", "edge", "kind", "events_per_frame"),
			nonZero("parley_connections", "service", "edge"),
			present("parley_resyncs_total", "service", "edge"),
			present("parley_token_expiries_total", "service", "edge"),
			present("parley_ephemeral_shed_total", "service", "edge"),
			nonZero("parley_pushed_deliveries_total", "service", "edge", "kind", "event"),
			present("parley_seq_gaps_total", "service", "edge"),
			nonZero("grpc_server_handled_total", "service", "edge", "grpc_method", "Push", "grpc_code", "OK"),
			nonZero("grpc_server_handling_seconds", "service", "edge", "grpc_method", "Push"),
			nonZero("grpc_client_handled_total", "service", "edge", "grpc_method", "History", "grpc_code", "OK"),
			nonZero("grpc_client_handling_seconds", "service", "edge", "grpc_method", "History"),
		}},
	}
	for i, pr := range e.p.Presence {
		services = append(services, struct {
			name    string
			handler http.Handler
			wants   []want
		}{fmt.Sprintf("presence-%d", i), pr.Metrics(), append([]want{
			present("parley_consumer_lag", "service", "presence", "group", "parley-presence", "topic", topics.Presence),
			// Every instance records the edge's heartbeats.
			nonZero("grpc_server_handled_total", "service", "presence", "grpc_code", "OK"),
			nonZero("grpc_server_handling_seconds", "service", "presence"),
		}, kafka("client")...)})
	}
	for _, s := range services {
		t.Run(s.name, func(t *testing.T) {
			service, _, _ := strings.Cut(s.name, "-")
			mfs := settled(t, func() map[string]*dto.MetricFamily { return scrape(t, s.handler) }, append(common(service), s.wants...))
			// Every series of Parley's own families names this service.
			for name, mf := range mfs {
				if !strings.HasPrefix(name, "parley_") && !strings.HasPrefix(name, "grpc_") {
					continue
				}
				for _, m := range mf.GetMetric() {
					if got := label(m, "service"); got != service {
						t.Errorf("%s%v: service=%q, want %q", name, m.GetLabel(), got, service)
					}
				}
			}
		})
	}

	// parley run has one admin address: the edge's /metrics serves every
	// service's families there.
	t.Run("combined", func(t *testing.T) {
		resp, err := http.Get("http://" + e.p.Edge.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %s", resp.Status)
		}
		mfs := parse(t, resp.Body)
		var wants []want
		for _, stage := range []string{"sequenced", "persisted", "pushed", "written"} {
			wants = append(wants, nonZero("parley_event_stage_seconds", "stage", stage))
		}
		for _, service := range []string{"edge", "ingest", "fanout", "persistence", "presence"} {
			wants = append(wants, present("parley_build_info", "service", service))
		}
		for _, w := range wants {
			if err := check(mfs, w); err != nil {
				t.Error(err)
			}
		}
		if n := len(mfs["go_goroutines"].GetMetric()); n != 1 {
			t.Fatalf("go_goroutines has %d series, want the process's one", n)
		}
	})
}

func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	return parse(t, rec.Body)
}

func parse(t *testing.T, body interface{ Read([]byte) (int, error) }) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// settled scrapes until every want holds, for at most 10 s, and fails
// the test with what still does not. The last steps of a message's way (a
// Push returning to fan-out, the edge counting a frame it wrote) may
// finish just after the client read it.
func settled(t *testing.T, scrape func() map[string]*dto.MetricFamily, wants []want) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs := scrape()
		var errs []error
		for _, w := range wants {
			if err := check(mfs, w); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			return mfs
		}
		if time.Now().After(deadline) {
			for _, err := range errs {
				t.Error(err)
			}
			return mfs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// check finds a series of w's family with w's labels, with a count or
// value above zero when w asks for it.
func check(mfs map[string]*dto.MetricFamily, w want) error {
	mf := mfs[w.family]
	if mf == nil {
		return fmt.Errorf("%s: missing", w.family)
	}
	for _, m := range mf.GetMetric() {
		if hasLabels(m, w.labels) && (!w.positive || value(m) > 0) {
			return nil
		}
	}
	what := "no series with labels"
	if w.positive {
		what = "no series above zero with labels"
	}
	return fmt.Errorf("%s: %s %v; have %v", w.family, what, w.labels, mf.GetMetric())
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		if label(m, k) != v {
			return false
		}
	}
	return true
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// value is a counter's or gauge's value, a histogram's count.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}
