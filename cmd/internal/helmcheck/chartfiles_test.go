package main

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/parleychat/parley/pkg/server/metrics"
)

// The chart's dashboard and alerts (helm/parley/files) are written against
// the metric names the services agreed to export. Each family with the
// labels its series carry; histograms also have _bucket (with le), _sum
// and _count.
var agreedMetrics = map[string][]string{
	"parley_build_info":                 {"version", "commit", "go_version"},
	"parley_event_stage_seconds":        {"stage"},
	"parley_consumer_lag":               {"group", "topic", "partition"},
	"parley_batch_size":                 {"kind"},
	"parley_connections":                nil,
	"parley_resyncs_total":              nil,
	"parley_ephemeral_shed_total":       nil,
	"parley_pushed_deliveries_total":    {"kind"},
	"parley_dead_letters_total":         {"reason"},
	"parley_hanging_transactions_total": {"outcome"},
	"parley_streamed_submits_total":     {"grpc_code"},
	"parley_stale_events_total":         nil,
	"parley_seq_gaps_total":             nil,
	"grpc_server_handled_total":         {"grpc_type", "grpc_service", "grpc_method", "grpc_code"},
	"grpc_server_handling_seconds":      {"grpc_type", "grpc_service", "grpc_method"},
	"grpc_client_handled_total":         {"grpc_type", "grpc_service", "grpc_method", "grpc_code"},
	"grpc_client_handling_seconds":      {"grpc_type", "grpc_service", "grpc_method"},
	// franz-go's kprom plugin, namespace parley, subsystem kafka.
	"parley_kafka_connects_total":               {"node_id"},
	"parley_kafka_write_bytes_total":            {"node_id"},
	"parley_kafka_read_bytes_total":             {"node_id"},
	"parley_kafka_request_duration_e2e_seconds": {"node_id"},
	"parley_cassandra_query_seconds":            {"op"},
	"parley_cassandra_query_errors_total":       {"op"},
}

var histograms = set("parley_event_stage_seconds", "parley_batch_size", "grpc_server_handling_seconds",
	"grpc_client_handling_seconds", "parley_kafka_request_duration_e2e_seconds", "parley_cassandra_query_seconds")

// targetLabels are the labels Prometheus and the chart's ServiceMonitor put
// on every scraped series; service is also each service's constant label.
var targetLabels = []string{"service", "namespace", "pod", "job", "instance", "container", "endpoint"}

// knownSeries maps each series name the files may select to its labels:
// the agreed families, what metrics.NewRegistry registers for every
// service (Go runtime and process collectors, gathered here, not listed),
// and up, which Prometheus writes for each target.
func knownSeries(t *testing.T) map[string][]string {
	t.Helper()
	known := map[string][]string{"up": nil}
	for name, l := range agreedMetrics {
		if histograms[name] {
			known[name+"_bucket"] = append(slices.Clone(l), "le")
			known[name+"_sum"] = l
			known[name+"_count"] = l
			continue
		}
		known[name] = l
	}
	families, err := metrics.NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		known[f.GetName()] = nil
	}
	for name, l := range known {
		known[name] = append(slices.Clone(l), targetLabels...)
	}
	return known
}

// grafanaVar matches Grafana's interval variables, which are not PromQL.
var grafanaVar = regexp.MustCompile(`\$__(rate_interval|interval|range)`)

// checkFileExpr checks one expression of the chart's files: PromQL, only
// known series, and only their labels in selectors. It returns the series.
func checkFileExpr(t *testing.T, where, expr string, known map[string][]string) []string {
	t.Helper()
	expr = grafanaVar.ReplaceAllString(expr, "5m")
	names, err := checkPromQL(expr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, expr, err)
		return nil
	}
	if len(names) == 0 {
		t.Errorf("%s: %q selects no metric", where, expr)
	}
	e, _ := metricsql.Parse(expr)
	metricsql.VisitAll(e, func(x metricsql.Expr) {
		me, ok := x.(*metricsql.MetricExpr)
		if !ok || len(me.LabelFilterss) == 0 {
			return
		}
		lfs := me.LabelFilterss[0]
		if len(lfs) == 0 || lfs[0].Label != "__name__" {
			t.Errorf("%s: %q: a selector without a metric name", where, expr)
			return
		}
		labels, ok := known[lfs[0].Value]
		if !ok {
			t.Errorf("%s: %q: metric %s is not one the services export (agreed list in chartfiles_test.go)", where, expr, lfs[0].Value)
			return
		}
		for _, lf := range lfs[1:] {
			if !slices.Contains(labels, lf.Label) {
				t.Errorf("%s: %q: %s has no label %s", where, expr, lfs[0].Value, lf.Label)
			}
		}
	})
	return names
}

type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile("../../../helm/parley/files/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard has no title or uid")
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	for _, v := range []string{"datasource", "namespace", "service"} {
		if !vars[v] {
			t.Errorf("dashboard lacks the variable $%s", v)
		}
	}
	known := knownSeries(t)
	used := map[string]bool{}
	ids := map[int]bool{}
	var panels []dashboardPanel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...)
	}
	graphs := 0
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel id %d repeated", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W < 1 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos x %d w %d outside the 24 columns", p.Title, p.GridPos.X, p.GridPos.W)
		}
		if p.Type == "row" {
			continue
		}
		graphs++
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %q, want ${datasource}", p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, v := range regexp.MustCompile(`\$([a-z]+)`).FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[v[1]] {
					t.Errorf("panel %q: $%s is not a dashboard variable", p.Title, v[1])
				}
			}
			for _, n := range checkFileExpr(t, "panel "+p.Title, tg.Expr, known) {
				used[n] = true
			}
		}
	}
	// What the dashboard is for: delivery latency, throughput, lag,
	// errors, connections, per service.
	for _, n := range []string{"parley_event_stage_seconds_bucket", "parley_event_stage_seconds_count",
		"parley_consumer_lag", "parley_dead_letters_total", "grpc_server_handled_total",
		"parley_connections", "up", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if !used[n] {
			t.Errorf("no panel shows %s", n)
		}
	}
	t.Logf("%d panels, %d series", graphs, len(used))
}

type ruleFile struct {
	Groups []ruleGroup `json:"groups"`
}

func TestAlerts(t *testing.T) {
	raw, err := os.ReadFile("../../../helm/parley/files/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	strict, err := sigsjson.UnmarshalStrict(js, &f)
	if err != nil || len(strict) > 0 {
		t.Fatalf("alerts.yaml: %v %v", err, strict)
	}
	for _, e := range ruleErrors(f.Groups) {
		t.Error(e)
	}
	ops, err := os.ReadFile("../../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ +(.+)$`).FindAllStringSubmatch(string(ops), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	known := knownSeries(t)
	alerts := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Expr != nil {
				checkFileExpr(t, "rule "+r.Alert+r.Record, r.Expr.String(), known)
			}
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a summary and a description", r.Alert)
			}
			const base = "https://github.com/parleychat/parley/blob/main/docs/OPERATIONS.md#"
			url := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(url, base)
			switch {
			case !ok:
				t.Errorf("%s: runbook_url %q is not a section of docs/OPERATIONS.md", r.Alert, url)
			case anchor != strings.ToLower(r.Alert):
				t.Errorf("%s: runbook_url anchor %q, want %q", r.Alert, anchor, strings.ToLower(r.Alert))
			case !anchors[anchor]:
				t.Errorf("%s: docs/OPERATIONS.md has no section %q", r.Alert, anchor)
			}
		}
	}
	// What the alerts must cover: lag growing, dead letters, resyncs,
	// error rates, a service down.
	for _, a := range []string{"ParleyConsumerLagGrowing", "ParleyDeadLetters", "ParleyResyncsHigh",
		"ParleyGRPCErrors", "ParleyCassandraErrors", "ParleyServiceDown", "ParleyHangingTransaction", "ParleySubmitErrors"} {
		if !alerts[a] {
			t.Errorf("no alert %s", a)
		}
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading: lower case,
// punctuation dropped, spaces as hyphens.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ' || r == '-':
			b.WriteRune('-')
		case r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}
