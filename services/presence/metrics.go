package presence

import (
	"net/http"

	"github.com/parleychat/parley/pkg/server/metrics"
)

// Metrics serves the service's metrics in the Prometheus text format.
func (s *Service) Metrics() http.Handler { return metrics.Handler(s.reg) }
