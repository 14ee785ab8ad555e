package tracing

import (
	"context"
	"net"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// collector is an OTLP/gRPC trace receiver on loopback that keeps what it
// is sent.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu  sync.Mutex
	got []*collectortrace.ExportTraceServiceRequest
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// TestStartExportsOverOTLP: with an endpoint, Start's provider sends the
// spans to it, under the configured service name, by shutdown at the
// latest.
func TestStartExportsOverOTLP(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	tp, shutdown, err := Start(context.Background(), Config{Endpoint: lis.Addr().String(), Ratio: 1, Service: "parley-test"})
	if err != nil || tp == nil {
		t.Fatalf("Start = %v, %v", tp, err)
	}
	_, span := Tracer(tp).Start(context.Background(), "exported")
	span.End()
	if err := shutdown(t.Context()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	service := ""
	for _, req := range c.got {
		for _, rs := range req.GetResourceSpans() {
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					service = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					names = append(names, s.GetName())
				}
			}
		}
	}
	if len(names) != 1 || names[0] != "exported" || service != "parley-test" {
		t.Fatalf("collector got spans %v of service %q, want [exported] of parley-test", names, service)
	}
}
