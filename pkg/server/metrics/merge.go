package metrics

import (
	"errors"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	dto "github.com/prometheus/client_model/go"
)

// Merged gathers several services' registries as one, for a process that
// runs them all (parley run) and has one address to serve them on. Their
// families are told apart by the service label; the series every registry
// has alike (the Go runtime's and the process's, the same process seen
// several times) are kept once, from the first registry that has them,
// and so are the series of two instances of one service that carry the
// same labels (the embedded platform's presence instances).
func Merged(gs ...prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		byName := map[string]*dto.MetricFamily{}
		seen := map[string]bool{}
		var errs []error
		for _, g := range gs {
			mfs, err := g.Gather()
			if err != nil {
				errs = append(errs, err)
			}
			for _, mf := range mfs {
				into := byName[mf.GetName()]
				if into == nil {
					into = &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type, Unit: mf.Unit}
					byName[mf.GetName()] = into
				}
				if into.GetType() != mf.GetType() {
					continue
				}
				for _, m := range mf.Metric {
					key := mf.GetName() + "\xff" + labelKey(m.Label)
					if seen[key] {
						continue
					}
					seen[key] = true
					into.Metric = append(into.Metric, m)
				}
			}
		}
		out := make([]*dto.MetricFamily, 0, len(byName))
		for _, mf := range byName {
			out = append(out, mf)
		}
		slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
		return out, errors.Join(errs...)
	})
}

// labelKey is a series' labels as one string; the registry hands them out
// sorted by name.
func labelKey(ls []*dto.LabelPair) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.GetName())
		b.WriteByte('=')
		b.WriteString(l.GetValue())
		b.WriteByte('\xff')
	}
	return b.String()
}
