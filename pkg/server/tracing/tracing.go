// Package tracing is how Parley's services make and carry OpenTelemetry
// spans: a TracerProvider from configuration (OTLP export, off unless an
// endpoint is set), W3C trace context in Kafka record headers and gRPC
// metadata, and the links that tie a batch to the messages it carries.
//
// Nothing here is global: each service takes its trace.TracerProvider
// from its Config (nil means no tracing) and the propagator is always W3C
// trace context, whatever the process set as otel's global one.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Scope is the instrumentation scope of every span Parley makes; the
// service is told apart by the span's name prefix (edge., ingest., …) and
// the resource's service.name.
const Scope = "github.com/parleychat/parley"

// Propagator is W3C trace context (traceparent, tracestate), the one
// format Parley writes into gRPC metadata and Kafka headers.
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// Or returns tp, or a provider that makes no spans when tp is nil.
func Or(tp trace.TracerProvider) trace.TracerProvider {
	if tp == nil {
		return noop.NewTracerProvider()
	}
	return tp
}

// Tracer is the tracer of Parley's own spans from tp (nil: no spans).
func Tracer(tp trace.TracerProvider) trace.Tracer { return Or(tp).Tracer(Scope) }

// GRPCServer are the server options that make a span of every call
// received (child of the caller's span when the call carries one) and put
// the caller's request id, when it sent one, in the call's context.
func GRPCServer(tp trace.TracerProvider) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(grpcOpts(tp)...)),
		grpc.ChainUnaryInterceptor(receiveRequestID),
	}
}

// GRPCClient are the dial options that make a span of every call made and
// send its span context and request id (WithRequestID) with the call.
func GRPCClient(tp trace.TracerProvider) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(grpcOpts(tp)...)),
		grpc.WithChainUnaryInterceptor(sendRequestID),
	}
}

// requestIDHeader is the gRPC metadata key of the request id.
const requestIDHeader = "parley-request-id"

func sendRequestID(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if id := RequestID(ctx); id != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, requestIDHeader, id)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func receiveRequestID(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if ids := metadata.ValueFromIncomingContext(ctx, requestIDHeader); len(ids) > 0 {
		ctx = WithRequestID(ctx, ids[0])
	}
	return handler(ctx, req)
}

func grpcOpts(tp trace.TracerProvider) []otelgrpc.Option {
	// Explicit provider, propagator and meter: otelgrpc would otherwise
	// take otel's process-wide ones. gRPC metrics stay off: the services
	// keep their own Prometheus registries.
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(Or(tp)),
		otelgrpc.WithPropagators(Propagator()),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
	}
}

// Config says whether and where spans are exported.
type Config struct {
	// Endpoint is the OTLP/gRPC collector: a URL (http:// for plaintext,
	// https:// for TLS) or host:port (plaintext). Empty: no export, unless
	// FromEnv is set.
	Endpoint string
	// FromEnv exports with the OTLP exporter's own standard environment
	// (OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_EXPORTER_OTLP_*).
	FromEnv bool
	// Ratio is the share of new traces sampled, 0 to 1. A span with a
	// parent follows its parent's decision; a batch span follows its links
	// (Sampler).
	Ratio float64
	// Service is the resource's service.name.
	Service string
}

// Enabled reports whether c exports spans.
func (c Config) Enabled() bool { return c.Endpoint != "" || c.FromEnv }

// ConfigFromEnv reads PARLEY_OTLP_ENDPOINT (or, when unset, whether the
// standard OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// is set) and PARLEY_TRACE_RATIO (1 by default).
func ConfigFromEnv(service string) (Config, error) {
	c := Config{Service: service, Endpoint: os.Getenv("PARLEY_OTLP_ENDPOINT"), Ratio: 1}
	if c.Endpoint == "" {
		c.FromEnv = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	}
	if v := os.Getenv("PARLEY_TRACE_RATIO"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 || r > 1 {
			return c, fmt.Errorf("PARLEY_TRACE_RATIO=%q: want a number from 0 to 1", v)
		}
		c.Ratio = r
	}
	return c, nil
}

// Start makes the provider c asks for: with export off, nil (no spans,
// nothing to flush); else an SDK provider batching spans to the OTLP
// collector. shutdown flushes what is queued; call it once the services
// have stopped.
func Start(ctx context.Context, c Config) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	if !c.Enabled() {
		return nil, func(context.Context) error { return nil }, nil
	}
	var opts []otlptracegrpc.Option
	if c.Endpoint != "" {
		u := c.Endpoint
		if !strings.Contains(u, "://") {
			u = "http://" + u
		}
		opts = append(opts, otlptracegrpc.WithEndpointURL(u))
	}
	// The exporter connects lazily, so a collector that is down delays
	// nothing here; spans it cannot take are dropped.
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", c.Service)))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, nil, fmt.Errorf("trace resource: %w", err)
	}
	sdk := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(Sampler(c.Ratio)),
		sdktrace.WithResource(res),
	)
	return sdk, sdk.Shutdown, nil
}

// Sampler samples a ratio of new traces; a span with a parent follows the
// parent; a span without parent but with links (a batch) is sampled when
// any message it links to is, so a sampled message's batch spans are
// there to follow, and a batch of unsampled ones costs nothing.
func Sampler(ratio float64) sdktrace.Sampler {
	return linkSampler{base: sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))}
}

type linkSampler struct{ base sdktrace.Sampler }

func (s linkSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if trace.SpanContextFromContext(p.ParentContext).IsValid() || len(p.Links) == 0 {
		return s.base.ShouldSample(p)
	}
	for _, l := range p.Links {
		if l.SpanContext.IsSampled() {
			return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
		}
	}
	return sdktrace.SamplingResult{Decision: sdktrace.Drop}
}

func (s linkSampler) Description() string {
	return "LinkSampler{" + s.base.Description() + "}"
}

// Carry is what a message sent on a long-lived stream carries for its own
// trace, as a unary call's metadata does: ctx's span context and request
// id. Nil when ctx has neither.
func Carry(ctx context.Context) map[string]string {
	m := propagation.MapCarrier{}
	Propagator().Inject(ctx, m)
	if id := RequestID(ctx); id != "" {
		m[requestIDHeader] = id
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// Received puts into ctx what Carry took from the sender's.
func Received(ctx context.Context, m map[string]string) context.Context {
	if len(m) == 0 {
		return ctx
	}
	ctx = Propagator().Extract(ctx, propagation.MapCarrier(m))
	if id := m[requestIDHeader]; id != "" {
		ctx = WithRequestID(ctx, id)
	}
	return ctx
}
