package main

import (
	"strings"
	"testing"
)

const serviceMonitorDoc = `apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: parley
  labels: {app: edge}
spec:
  namespaceSelector: {matchNames: [parley]}
  # The Service of TestCheck has no labels: select every Service.
  selector: {}
  endpoints:
    - port: http
      path: /metrics
      interval: 30s
      scrapeTimeout: 10s
      honorLabels: true
      relabelings:
        - {sourceLabels: [__meta_kubernetes_service_label_app], targetLabel: service, action: replace}
`

const ruleDoc = `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: parley}
spec:
  groups:
    - name: parley
      rules:
        - record: namespace:parley_connections:sum
          expr: sum by (namespace) (parley_connections)
        - alert: ParleyDown
          expr: sum by (service) (up{service="edge"}) == 0
          for: 2m
          labels: {severity: critical}
          annotations:
            summary: "{{ $labels.service }} is down ({{ $value | humanize }})"
`

const hpaDoc = `apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: edge}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: edge}
  minReplicas: 2
  maxReplicas: 4
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}
`

const networkPolicyDoc = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: edge}
spec:
  podSelector: {matchLabels: {app: edge}}
  policyTypes: [Ingress, Egress]
  ingress:
    - ports: [{port: 8080, protocol: TCP}]
    - ports: [{port: 8080, protocol: TCP}]
      from: [{podSelector: {matchLabels: {app: edge}}}]
  egress:
    - ports: [{port: 53, protocol: UDP}]
    - ports: [{port: 8080, protocol: TCP}]
      to: [{podSelector: {matchLabels: {app: edge}}}]
    - ports: [{port: 9092, protocol: TCP}]
      to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: data}}}]
`

// TestCheckMonitoringAndPolicies runs the checks over the deployment and
// Service of TestCheck plus one more object, changed so that each check
// must fire.
func TestCheckMonitoringAndPolicies(t *testing.T) {
	c := newTestChecker(t)
	cases := []struct {
		name     string
		extra    string
		old, new string // replace old with new in extra
		base     [2]string
		want     []string
	}{
		{name: "service monitor", extra: serviceMonitorDoc},
		{name: "service monitor unknown field", extra: serviceMonitorDoc, old: "honorLabels", new: "honourLabels",
			want: []string{`unknown field "spec.endpoints[0].honourLabels"`}},
		{name: "service monitor field case", extra: serviceMonitorDoc, old: "scrapeTimeout", new: "ScrapeTimeout",
			want: []string{`unknown field "spec.endpoints[0].ScrapeTimeout"`}},
		{name: "service monitor wrong port", extra: serviceMonitorDoc, old: "port: http", new: "port: metrics",
			want: []string{`spec.endpoints[0].port "metrics" is not a port name of any Service`}},
		{name: "service monitor selects nothing", extra: serviceMonitorDoc, old: "selector: {}", new: "selector: {matchLabels: {app: web}}",
			want: []string{"selector app=web matches no rendered Service"}},
		{name: "service monitor other namespace", extra: serviceMonitorDoc, old: "matchNames: [parley]", new: "matchNames: [chat]",
			want: []string{`leaves out the release namespace "parley"`}},
		{name: "service monitor timeout over interval", extra: serviceMonitorDoc, old: "scrapeTimeout: 10s", new: "scrapeTimeout: 1m",
			want: []string{"scrapeTimeout 1m is longer than interval 30s"}},
		{name: "service monitor bad duration", extra: serviceMonitorDoc, old: "interval: 30s", new: "interval: 30 seconds",
			want: []string{`"30 seconds" is not a Prometheus duration`}},
		{name: "service monitor bad relabel action", extra: serviceMonitorDoc, old: "action: replace", new: "action: rename",
			want: []string{`action "rename" is not a relabel action`}},
		{name: "service monitor invalid label", extra: serviceMonitorDoc, old: "labels: {app: edge}\nspec", new: "labels: {app: \"-\"}\nspec",
			want: []string{"metadata.labels: Invalid value"}},
		{name: "unknown monitoring kind", extra: "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: p}\n",
			want: []string{"helmcheck knows ServiceMonitor and PrometheusRule"}},

		{name: "rule", extra: ruleDoc},
		{name: "rule expr does not parse", extra: ruleDoc, old: "(up{service=\"edge\"}) == 0", new: "(up{service=\"edge\"} == 0",
			want: []string{"rules[1] (ParleyDown): expr:"}},
		{name: "rule range function without range", extra: ruleDoc, old: "sum by (namespace) (parley_connections)", new: "rate(parley_connections)",
			want: []string{"rate needs a range vector"}},
		{name: "rule MetricsQL-only function", extra: ruleDoc, old: "sum by (namespace) (parley_connections)", new: "median_over_time(parley_connections[5m])",
			want: []string{"median_over_time is not a PromQL function"}},
		{name: "rule bad for", extra: ruleDoc, old: "for: 2m", new: "for: two minutes",
			want: []string{`for: "two minutes" is not a Prometheus duration`}},
		{name: "rule both alert and record", extra: ruleDoc, old: "        - alert: ParleyDown\n", new: "        - alert: ParleyDown\n          record: x\n",
			want: []string{"set exactly one of alert and record"}},
		{name: "rule bad record name", extra: ruleDoc, old: "record: namespace:parley_connections:sum", new: "record: namespace-connections",
			want: []string{`record "namespace-connections" is not a metric name`}},
		{name: "rule annotation template", extra: ruleDoc, old: "{{ $labels.service }} is down", new: "{{ $labels.service is down",
			want: []string{"annotation summary:"}},
		{name: "rule annotation unknown function", extra: ruleDoc, old: "$value | humanize", new: "$value | humanise",
			want: []string{`function "humanise" not defined`}},
		{name: "rule unknown field", extra: ruleDoc, old: "for: 2m", new: "for: 2m\n          severity: critical",
			want: []string{`unknown field "spec.groups[0].rules[1].severity"`}},
		{name: "rule without expr", extra: ruleDoc, old: "          expr: sum by (service)", new: "          exp: sum by (service)",
			want: []string{"expr is required", `unknown field "spec.groups[0].rules[1].exp"`}},
		{name: "rule groups repeated", extra: ruleDoc + "    - name: parley\n      rules: [{record: a, expr: vector(1)}]\n",
			want: []string{`group name "parley" repeated`}},

		{name: "hpa", extra: hpaDoc, base: [2]string{"  replicas: 2\n", ""}},
		{name: "hpa while replicas set", extra: hpaDoc,
			want: []string{"Deployment edge (parley/templates/edge.yaml) sets spec.replicas although this autoscaler owns it"}},
		{name: "hpa target missing", extra: hpaDoc, old: "kind: Deployment, name: edge}", new: "kind: Deployment, name: web}", base: [2]string{"  replicas: 2\n", ""},
			want: []string{"scaleTargetRef Deployment web is not rendered"}},
		{name: "hpa min above max", extra: hpaDoc, old: "minReplicas: 2", new: "minReplicas: 5", base: [2]string{"  replicas: 2\n", ""},
			want: []string{"minReplicas 5 is above maxReplicas 4"}},

		{name: "network policy", extra: networkPolicyDoc},
		{name: "network policy selects nothing", extra: networkPolicyDoc, old: "podSelector: {matchLabels: {app: edge}}\n  policyTypes", new: "podSelector: {matchLabels: {app: web}}\n  policyTypes",
			want: []string{"spec.podSelector selects no rendered pod template"}},
		{name: "network policy port nobody listens on", extra: networkPolicyDoc, old: "  ingress:\n    - ports: [{port: 8080", new: "  ingress:\n    - ports: [{port: 8081",
			want: []string{"spec.ingress[0]: port 8081 is not a container port"}},
		{name: "network policy peer selects nothing", extra: networkPolicyDoc, old: "      from: [{podSelector: {matchLabels: {app: edge}}}]", new: "      from: [{podSelector: {matchLabels: {app: ingest}}}]",
			want: []string{"spec.ingress[1].from[0]: podSelector selects no rendered pod template"}},
		{name: "network policy egress to a port the peer lacks", extra: networkPolicyDoc, old: "    - ports: [{port: 8080, protocol: TCP}]\n      to:", new: "    - ports: [{port: 7101, protocol: TCP}]\n      to:",
			want: []string{"spec.egress[1].to[0]: port 7101 is not a container port"}},

		{name: "dashboard not JSON", extra: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\ndata:\n  d.json: '{\"panels\": [}'\n",
			want: []string{"data[d.json] is not valid JSON"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			extra := tc.extra
			if tc.old != "" {
				if !strings.Contains(extra, tc.old) {
					t.Fatalf("%q not in the manifest", tc.old)
				}
				extra = strings.Replace(extra, tc.old, tc.new, 1)
			}
			base := deployment
			if tc.base[0] != "" {
				base = strings.Replace(base, tc.base[0], tc.base[1], 1)
			}
			_, errs := c.check([]byte(base + "---\n" + extra))
			msg := joinErrs(errs)
			if len(tc.want) == 0 && len(errs) > 0 {
				t.Fatalf("unexpected errors:\n%s", msg)
			}
			if len(tc.want) > 0 && len(errs) == 0 {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("errors lack %q:\n%s", w, msg)
				}
			}
		})
	}
}

func TestCheckPromQL(t *testing.T) {
	good := map[string][]string{
		`sum by (namespace) (rate(parley_dead_letters_total{service="edge"}[5m])) > 0`:        {"parley_dead_letters_total"},
		`histogram_quantile(0.99, sum by (le) (rate(parley_event_stage_seconds_bucket[5m])))`: {"parley_event_stage_seconds_bucket"},
		`a / clamp_min(b, 1) > 0.05 and delta(c[10m]) > 0`:                                    {"a", "b", "c"},
		`topk(10, max by (topic) (parley_consumer_lag))`:                                      {"parley_consumer_lag"},
		`up == 0 or absent(up)`:                            {"up"},
		`quantile_over_time(0.9, parley_consumer_lag[1h])`: {"parley_consumer_lag"},
		`sum without (pod) (increase(grpc_server_handled_total{grpc_code!="OK"}[5m])) / ignoring(x) vector(1)`: {"grpc_server_handled_total"},
	}
	for expr, want := range good {
		got, err := checkPromQL(expr)
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			continue
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: metrics %q, want %q", expr, got, want)
		}
	}
	bad := map[string]string{
		``:                                 "empty",
		`sum(rate(x[5m])`:                  "",
		`rate(x)`:                          "rate needs a range vector",
		`quantile_over_time(0.9, x)`:       "quantile_over_time needs a range vector",
		`median(x)`:                        "median is not a PromQL",
		`sum(x) limit 3`:                   "MetricsQL",
		`x{a="1" or b="2"}`:                "MetricsQL",
		`WITH (f = x) f`:                   "WITH templates",
		`histogram_quantile(0.9, rate(x))`: "rate needs a range vector",
		`sum by (le) rate(x[5m])`:          "",
		`x[5m`:                             "",
	}
	for expr, want := range bad {
		_, err := checkPromQL(expr)
		if err == nil {
			t.Errorf("%q parsed, want an error", expr)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", expr, err, want)
		}
	}
}
