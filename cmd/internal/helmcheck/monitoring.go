package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsjson "sigs.k8s.io/json"
)

// The Prometheus Operator's kinds (monitoring.coreos.com/v1) are custom
// resources, not in k8s.io/api, and their CRDs' schemas are not in the
// Kubernetes OpenAPI spec. helmcheck decodes them strictly (case-sensitive,
// unknown and duplicate fields refused) into the local types below, which
// hold the subset of the CRDs' fields a chart here may use: a field outside
// that subset is refused like a typo until it is added here. Then it checks
// what Prometheus would refuse or silently ignore: PromQL that does not
// parse, durations, relabel actions, annotation templates, and a
// ServiceMonitor that selects no rendered Service port.
const monitoringGroup = "monitoring.coreos.com"

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              serviceMonitorSpec `json:"spec"`
}

type serviceMonitorSpec struct {
	JobLabel          string               `json:"jobLabel,omitempty"`
	TargetLabels      []string             `json:"targetLabels,omitempty"`
	PodTargetLabels   []string             `json:"podTargetLabels,omitempty"`
	Endpoints         []scrapeEndpoint     `json:"endpoints"`
	Selector          metav1.LabelSelector `json:"selector"`
	NamespaceSelector struct {
		Any        bool     `json:"any,omitempty"`
		MatchNames []string `json:"matchNames,omitempty"`
	} `json:"namespaceSelector,omitempty"`
	SampleLimit *uint64 `json:"sampleLimit,omitempty"`
	TargetLimit *uint64 `json:"targetLimit,omitempty"`
}

type scrapeEndpoint struct {
	Port                 string              `json:"port,omitempty"`
	TargetPort           *intstr.IntOrString `json:"targetPort,omitempty"`
	Path                 string              `json:"path,omitempty"`
	Scheme               string              `json:"scheme,omitempty"`
	Params               map[string][]string `json:"params,omitempty"`
	Interval             string              `json:"interval,omitempty"`
	ScrapeTimeout        string              `json:"scrapeTimeout,omitempty"`
	HonorLabels          bool                `json:"honorLabels,omitempty"`
	HonorTimestamps      *bool               `json:"honorTimestamps,omitempty"`
	FollowRedirects      *bool               `json:"followRedirects,omitempty"`
	EnableHTTP2          *bool               `json:"enableHttp2,omitempty"`
	FilterRunning        *bool               `json:"filterRunning,omitempty"`
	TLSConfig            map[string]any      `json:"tlsConfig,omitempty"`
	Authorization        map[string]any      `json:"authorization,omitempty"`
	Relabelings          []relabelConfig     `json:"relabelings,omitempty"`
	MetricRelabelings    []relabelConfig     `json:"metricRelabelings,omitempty"`
	TrackTimestampsStale *bool               `json:"trackTimestampsStaleness,omitempty"`
}

type relabelConfig struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    *string  `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []ruleGroup `json:"groups"`
	} `json:"spec"`
}

type ruleGroup struct {
	Name                    string            `json:"name"`
	Interval                string            `json:"interval,omitempty"`
	QueryOffset             string            `json:"query_offset,omitempty"`
	Limit                   *int              `json:"limit,omitempty"`
	Labels                  map[string]string `json:"labels,omitempty"`
	PartialResponseStrategy string            `json:"partial_response_strategy,omitempty"`
	Rules                   []rule            `json:"rules"`
}

type rule struct {
	Record        string              `json:"record,omitempty"`
	Alert         string              `json:"alert,omitempty"`
	Expr          *intstr.IntOrString `json:"expr"`
	For           string              `json:"for,omitempty"`
	KeepFiringFor string              `json:"keep_firing_for,omitempty"`
	Labels        map[string]string   `json:"labels,omitempty"`
	Annotations   map[string]string   `json:"annotations,omitempty"`
}

// DeepCopyObject makes the local types runtime.Objects, as helmcheck's
// object holds them; nothing here copies them.
func (s *serviceMonitor) DeepCopyObject() runtime.Object { c := *s; return &c }
func (p *prometheusRule) DeepCopyObject() runtime.Object { c := *p; return &c }

// monitoringDocument decodes and checks one monitoring.coreos.com object.
func monitoringDocument(js []byte, gvk schema.GroupVersionKind, src string) (*object, []error) {
	var obj interface {
		runtime.Object
		metav1.Object
	}
	switch {
	case gvk.Version != "v1":
		return nil, []error{fmt.Errorf("%s: helmcheck checks monitoring.coreos.com/v1 only, not %s", src, gvk.GroupVersion())}
	case gvk.Kind == "ServiceMonitor":
		obj = &serviceMonitor{}
	case gvk.Kind == "PrometheusRule":
		obj = &prometheusRule{}
	default:
		return nil, []error{fmt.Errorf("%s: helmcheck knows ServiceMonitor and PrometheusRule of %s, not %s", src, monitoringGroup, gvk.Kind)}
	}
	var errs []error
	strict, err := sigsjson.UnmarshalStrict(js, obj)
	if err != nil {
		return nil, []error{fmt.Errorf("%s: decoding %s: %w", src, gvk.Kind, err)}
	}
	o := &object{source: src, gvk: gvk, obj: obj, meta: obj}
	for _, e := range strict {
		errs = append(errs, fmt.Errorf("%s: strict decoding into the %s fields helmcheck knows (monitoring.go): %w", o, gvk.Kind, e))
	}
	switch t := obj.(type) {
	case *serviceMonitor:
		errs = append(errs, prefixed(o, serviceMonitorErrors(t))...)
	case *prometheusRule:
		errs = append(errs, prefixed(o, ruleErrors(t.Spec.Groups))...)
	}
	errs = append(errs, prefixed(o, metaErrors(o))...)
	return o, errs
}

func prefixed(o *object, errs []error) []error {
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = fmt.Errorf("%s: %w", o, e)
	}
	return out
}

// promDuration is the duration pattern of the operator's CRDs, as
// Prometheus parses durations.
var promDuration = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)

func parsePromDuration(s string) (time.Duration, error) {
	if s == "" || !promDuration.MatchString(s) {
		return 0, fmt.Errorf("%q is not a Prometheus duration (e.g. 30s, 5m, 1h30m)", s)
	}
	var total time.Duration
	for _, m := range durationPart.FindAllStringSubmatch(s, -1) {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", s, err)
		}
		total += time.Duration(n) * durationUnits[m[2]]
	}
	return total, nil
}

var durationPart = regexp.MustCompile(`([0-9]+)(ms|y|w|d|h|m|s)`)

// durationUnits are Prometheus's: a day is 24 h, a year 365 days.
var durationUnits = map[string]time.Duration{"ms": time.Millisecond, "s": time.Second, "m": time.Minute,
	"h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "y": 365 * 24 * time.Hour}

var relabelActions = set("replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
	"lowercase", "uppercase", "keepequal", "dropequal")

func serviceMonitorErrors(sm *serviceMonitor) []error {
	var errs []error
	if len(sm.Spec.Endpoints) == 0 {
		errs = append(errs, errors.New("spec.endpoints: at least one endpoint is required"))
	}
	if _, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector); err != nil {
		errs = append(errs, fmt.Errorf("spec.selector: %w", err))
	}
	for i, ep := range sm.Spec.Endpoints {
		p := fmt.Sprintf("spec.endpoints[%d]", i)
		if (ep.Port == "") == (ep.TargetPort == nil) {
			errs = append(errs, fmt.Errorf("%s: set exactly one of port (a Service port name) and targetPort", p))
		}
		if ep.Scheme != "" && ep.Scheme != "http" && ep.Scheme != "https" {
			errs = append(errs, fmt.Errorf("%s.scheme: %q is not http or https", p, ep.Scheme))
		}
		if ep.Path != "" && !strings.HasPrefix(ep.Path, "/") {
			errs = append(errs, fmt.Errorf("%s.path: %q does not start with /", p, ep.Path))
		}
		var interval, timeout time.Duration
		var err error
		if ep.Interval != "" {
			if interval, err = parsePromDuration(ep.Interval); err != nil {
				errs = append(errs, fmt.Errorf("%s.interval: %w", p, err))
			}
		}
		if ep.ScrapeTimeout != "" {
			if timeout, err = parsePromDuration(ep.ScrapeTimeout); err != nil {
				errs = append(errs, fmt.Errorf("%s.scrapeTimeout: %w", p, err))
			}
		}
		if interval > 0 && timeout > interval {
			errs = append(errs, fmt.Errorf("%s: scrapeTimeout %s is longer than interval %s (Prometheus refuses the scrape config)", p, ep.ScrapeTimeout, ep.Interval))
		}
		for j, rc := range append(slices.Clone(ep.Relabelings), ep.MetricRelabelings...) {
			if err := relabelErr(rc); err != nil {
				errs = append(errs, fmt.Errorf("%s relabeling %d: %w", p, j, err))
			}
		}
	}
	return errs
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

func relabelErr(rc relabelConfig) error {
	action := strings.ToLower(rc.Action)
	if action == "" {
		action = "replace"
	}
	if !relabelActions[action] {
		return fmt.Errorf("action %q is not a relabel action", rc.Action)
	}
	if rc.Regex != "" {
		if _, err := regexp.Compile("^(?:" + rc.Regex + ")$"); err != nil {
			return fmt.Errorf("regex: %w", err)
		}
	}
	for _, l := range rc.SourceLabels {
		if !labelName.MatchString(l) {
			return fmt.Errorf("source label %q is not a label name", l)
		}
	}
	if (action == "replace" || action == "hashmod" || action == "lowercase" || action == "uppercase") && rc.TargetLabel == "" {
		return fmt.Errorf("action %s needs targetLabel", action)
	}
	if action == "hashmod" && rc.Modulus == 0 {
		return errors.New("action hashmod needs modulus")
	}
	return nil
}

// ruleErrors checks rule groups as Prometheus loads them: unique group
// names, each rule either a recording or an alerting rule with a PromQL
// expression that parses, valid names and durations, and annotations that
// parse as Prometheus's alert templates.
func ruleErrors(groups []ruleGroup) []error {
	var errs []error
	if len(groups) == 0 {
		errs = append(errs, errors.New("spec.groups: no rule group"))
	}
	seen := map[string]bool{}
	for i, g := range groups {
		p := fmt.Sprintf("spec.groups[%d]", i)
		switch {
		case g.Name == "":
			errs = append(errs, fmt.Errorf("%s: name is required", p))
		case seen[g.Name]:
			errs = append(errs, fmt.Errorf("%s: group name %q repeated", p, g.Name))
		}
		seen[g.Name] = true
		if g.Interval != "" {
			if _, err := parsePromDuration(g.Interval); err != nil {
				errs = append(errs, fmt.Errorf("%s.interval: %w", p, err))
			}
		}
		if len(g.Rules) == 0 {
			errs = append(errs, fmt.Errorf("%s (%s): no rules", p, g.Name))
		}
		for j, r := range g.Rules {
			for _, e := range oneRuleErrors(r) {
				errs = append(errs, fmt.Errorf("%s.rules[%d] (%s%s): %w", p, j, r.Alert, r.Record, e))
			}
		}
	}
	return errs
}

func oneRuleErrors(r rule) []error {
	var errs []error
	switch {
	case (r.Alert == "") == (r.Record == ""):
		errs = append(errs, errors.New("set exactly one of alert and record"))
	case r.Record != "":
		if !metricName.MatchString(r.Record) {
			errs = append(errs, fmt.Errorf("record %q is not a metric name", r.Record))
		}
		if r.For != "" || r.KeepFiringFor != "" || len(r.Annotations) > 0 {
			errs = append(errs, errors.New("a recording rule has no for, keep_firing_for or annotations"))
		}
	case r.Alert != "":
		if !labelName.MatchString(r.Alert) {
			errs = append(errs, fmt.Errorf("alert name %q is not of the form [a-zA-Z_][a-zA-Z0-9_]*", r.Alert))
		}
	}
	if r.Expr == nil {
		errs = append(errs, errors.New("expr is required"))
	} else if _, err := checkPromQL(r.Expr.String()); err != nil {
		errs = append(errs, fmt.Errorf("expr: %w", err))
	}
	for name, d := range map[string]string{"for": r.For, "keep_firing_for": r.KeepFiringFor} {
		if d != "" {
			if _, err := parsePromDuration(d); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
		if !labelName.MatchString(k) {
			errs = append(errs, fmt.Errorf("label name %q is invalid", k))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.Annotations)) {
		if !labelName.MatchString(k) {
			errs = append(errs, fmt.Errorf("annotation name %q is invalid", k))
		}
		if err := alertTemplateErr(r.Annotations[k]); err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: %w", k, err))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
		if err := alertTemplateErr(r.Labels[k]); err != nil {
			errs = append(errs, fmt.Errorf("label %s: %w", k, err))
		}
	}
	return errs
}

// alertTemplateErr parses an alert's label or annotation value as
// Prometheus expands it: Go text/template with $labels, $externalLabels and
// $value defined first and Prometheus's template functions.
func alertTemplateErr(text string) error {
	const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	_, err := template.New("alert").Funcs(alertTemplateFuncs).Option("missingkey=zero").Parse(defs + text)
	return err
}

// alertTemplateFuncs names Prometheus's template functions; only their
// names matter for parsing.
var alertTemplateFuncs = func() template.FuncMap {
	m := template.FuncMap{}
	for _, n := range []string{"query", "first", "label", "value", "strvalue", "sortByLabel", "args", "tmpl",
		"safeHtml", "match", "reReplaceAll", "title", "toUpper", "toLower", "humanize", "humanize1024",
		"humanizeDuration", "humanizePercentage", "humanizeTimestamp", "toTime", "toDuration", "pathPrefix",
		"externalURL", "parseDuration", "stripPort", "stripDomain", "graphLink", "tableLink", "now", "urlQueryEscape"} {
		m[n] = func(...any) any { return nil }
	}
	return m
}()

// serviceMonitorRefErrors checks that a ServiceMonitor scrapes something
// rendered: its selector (in the release namespace) matches a Service, and
// each endpoint's port names a port of one of those Services.
func serviceMonitorRefErrors(sm *serviceMonitor, services map[string]*corev1.Service, namespace string) []error {
	var errs []error
	ns := sm.Spec.NamespaceSelector
	if !ns.Any && len(ns.MatchNames) > 0 && !slices.Contains(ns.MatchNames, namespace) {
		return []error{fmt.Errorf("namespaceSelector %v leaves out the release namespace %q", ns.MatchNames, namespace)}
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		return nil // reported by serviceMonitorErrors
	}
	var selected []*corev1.Service
	for _, name := range slices.Sorted(maps.Keys(services)) {
		if sel.Matches(labels.Set(services[name].Labels)) {
			selected = append(selected, services[name])
		}
	}
	if len(selected) == 0 {
		return []error{fmt.Errorf("selector %s matches no rendered Service", sel)}
	}
	for i, ep := range sm.Spec.Endpoints {
		if ep.Port == "" {
			continue
		}
		found := false
		for _, s := range selected {
			for _, p := range s.Spec.Ports {
				found = found || p.Name == ep.Port
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("spec.endpoints[%d].port %q is not a port name of any Service the selector matches", i, ep.Port))
		}
	}
	return errs
}

// configMapErrors refuses a ConfigMap whose *.json data is not JSON (a
// dashboard Grafana would fail to load).
func configMapErrors(cm *corev1.ConfigMap) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
		if strings.HasSuffix(k, ".json") && !json.Valid([]byte(cm.Data[k])) {
			var v any
			err := json.Unmarshal([]byte(cm.Data[k]), &v)
			errs = append(errs, fmt.Errorf("data[%s] is not valid JSON: %v", k, err))
		}
	}
	return errs
}
