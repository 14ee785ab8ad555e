package ingest

import (
	"net/http"

	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// Metrics serves the service's metrics in the Prometheus text format.
func (s *Service) Metrics() http.Handler { return metrics.Handler(s.reg) }

// newStreamedSubmits registers the counter of the Submits answered on a
// SubmitStream, by gRPC status code: a stream is one call to gRPC's own
// metrics, so this is where its commands' failures show.
func newStreamedSubmits(reg *prometheus.Registry) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_streamed_submits_total", ConstLabels: prometheus.Labels{"service": "ingest"},
		Help: "Submits answered on a SubmitStream, by the gRPC status code a unary Submit would have ended with.",
	}, []string{"grpc_code"})
	for _, code := range []codes.Code{codes.OK, codes.InvalidArgument, codes.Unavailable, codes.Internal} {
		c.WithLabelValues(code.String())
	}
	reg.MustRegister(c)
	return c
}
