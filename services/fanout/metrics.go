package fanout

import (
	"net/http"
	"time"

	"github.com/parleychat/parley/pkg/server/metrics"

	edgev1 "github.com/parleychat/parley/pkg/pb/parley/edge/v1"
)

// Metrics serves the service's metrics in the Prometheus text format.
func (s *Service) Metrics() http.Handler { return metrics.Handler(s.reg) }

// pushed measures each Push that returned: its deliveries, and the
// pushed stage of every event it carried.
func pushed(m *metrics.Service) func([]*edgev1.Delivery) {
	stage, size := m.Stage(metrics.StagePushed), m.BatchSize(metrics.BatchDeliveriesPerPush)
	return func(ds []*edgev1.Delivery) {
		size.Observe(float64(len(ds)))
		now := time.Now()
		for _, d := range ds {
			if ev := d.GetEvent(); ev != nil {
				metrics.ObserveStage(stage, ev.GetTime().AsTime(), now)
			}
		}
	}
}
