package main

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// checkPromQL parses a PromQL expression and returns the metric names it
// selects. It parses with metricsql, whose language is a superset of
// PromQL, and then refuses what PromQL does not have: functions outside
// PromQL's list, a range function given no range (rate(x) rather than
// rate(x[5m])), "or" inside a selector's braces, aggregation limits. It is
// lighter than Prometheus's own parser (github.com/prometheus/prometheus
// brings a large dependency tree into the workspace), and it does not type
// check everything Prometheus does (e.g. a range vector where an instant
// vector is due outside a function call).
func checkPromQL(expr string) ([]string, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, errors.New("empty expression")
	}
	if withTemplate.MatchString(expr) {
		return nil, errors.New("WITH templates are MetricsQL, not PromQL")
	}
	e, err := metricsql.Parse(expr)
	if err != nil {
		return nil, err
	}
	var errs []error
	var names []string
	metricsql.VisitAll(e, func(x metricsql.Expr) {
		switch t := x.(type) {
		case *metricsql.MetricExpr:
			if len(t.LabelFilterss) > 1 {
				errs = append(errs, fmt.Errorf("%s: \"or\" between label filters is MetricsQL, not PromQL", t.AppendString(nil)))
			}
			for _, lfs := range t.LabelFilterss {
				if len(lfs) > 0 && lfs[0].Label == "__name__" && !lfs[0].IsRegexp && !lfs[0].IsNegative {
					names = append(names, lfs[0].Value)
				}
			}
		case *metricsql.AggrFuncExpr:
			if !promAggregations[strings.ToLower(t.Name)] {
				errs = append(errs, fmt.Errorf("%s is not a PromQL aggregation", t.Name))
			}
			if t.Limit > 0 {
				errs = append(errs, fmt.Errorf("%s(...) limit %d is MetricsQL, not PromQL", t.Name, t.Limit))
			}
		case *metricsql.FuncExpr:
			name := strings.ToLower(t.Name)
			if !promFunctions[name] && !promRangeFunctions[name] {
				errs = append(errs, fmt.Errorf("%s is not a PromQL function", t.Name))
				return
			}
			if promRangeFunctions[name] {
				i := metricsql.GetRollupArgIdx(t)
				if i < 0 || i >= len(t.Args) {
					errs = append(errs, fmt.Errorf("%s: missing its range-vector argument", t.Name))
					return
				}
				if r, ok := t.Args[i].(*metricsql.RollupExpr); !ok || r.Window == nil {
					errs = append(errs, fmt.Errorf("%s needs a range vector, e.g. %s(x[5m])", t.Name, t.Name))
				}
			}
		}
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

var withTemplate = regexp.MustCompile(`(?i)^\s*with\s*\(`)

// PromQL's aggregation operators and functions (Prometheus 3), split by
// whether they take a range vector.
var (
	promAggregations = set("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio")
	promRangeFunctions = set("rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear",
		"changes", "resets", "absent_over_time", "present_over_time", "avg_over_time", "min_over_time",
		"max_over_time", "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time",
		"stdvar_over_time", "last_over_time", "mad_over_time", "double_exponential_smoothing", "holt_winters")
	promFunctions = set("abs", "absent", "ceil", "clamp", "clamp_max", "clamp_min", "day_of_month",
		"day_of_week", "day_of_year", "days_in_month", "exp", "floor", "histogram_avg", "histogram_count",
		"histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum",
		"hour", "info", "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "round",
		"scalar", "sgn", "sort", "sort_desc", "sort_by_label", "sort_by_label_desc", "sqrt", "time",
		"timestamp", "vector", "year", "acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh",
		"sin", "sinh", "tan", "tanh", "deg", "rad", "pi")
)

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}
