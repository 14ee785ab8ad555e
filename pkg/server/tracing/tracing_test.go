package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func newProvider(t *testing.T, ratio float64) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(Sampler(ratio)))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

func TestLogHandlerAddsTraceAndRequestIDs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "edge")
	tp, _ := newProvider(t, 1)
	ctx, span := Tracer(tp).Start(WithRequestID(context.Background(), "r-17"), "test")
	defer span.End()

	log.InfoContext(ctx, "handled", "n", 1)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
	}
	sc := span.SpanContext()
	want := map[string]string{"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String(), "request_id": "r-17", "service": "edge", "msg": "handled"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %q (line %s)", k, line[k], v, buf.String())
		}
	}

	// Without a span or request, the line has neither.
	buf.Reset()
	log.InfoContext(context.Background(), "idle")
	line = nil
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"trace_id", "span_id", "request_id"} {
		if _, ok := line[k]; ok {
			t.Errorf("line without a request has %s: %s", k, buf.String())
		}
	}
}

func TestRequestIDIsBounded(t *testing.T) {
	long := string(bytes.Repeat([]byte("x"), 500))
	if got := RequestID(WithRequestID(context.Background(), long)); len(got) != maxRequestID {
		t.Fatalf("request id of %d bytes kept as %d, want %d", len(long), len(got), maxRequestID)
	}
}

func TestRecordHeadersCarryTheSpan(t *testing.T) {
	tp, _ := newProvider(t, 1)
	ctx, span := Tracer(tp).Start(context.Background(), "produce")
	defer span.End()
	r := &kgo.Record{Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "other", Value: []byte("kept")}, {Key: "traceparent", Value: []byte("stale")}}}
	Inject(ctx, r)
	if got := SpanContext(r); !got.Equal(span.SpanContext().WithRemote(true)) {
		t.Fatalf("extracted %v, want %v", got, span.SpanContext())
	}
	n := 0
	for _, h := range r.Headers {
		if h.Key == "traceparent" {
			n++
		}
	}
	if n != 1 || r.Headers[0].Key != "other" {
		t.Fatalf("headers after inject: %v", r.Headers)
	}
	links := Links([]*kgo.Record{{}, r})
	if len(links) != 1 || links[0].SpanContext.SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("links %v, want one to the produced span", links)
	}
	// No span, no header.
	bare := &kgo.Record{}
	Inject(context.Background(), bare)
	if len(bare.Headers) != 0 {
		t.Fatalf("inject without a span wrote %v", bare.Headers)
	}
}

func TestSamplerFollowsLinks(t *testing.T) {
	tp, exp := newProvider(t, 0) // no new trace sampled by ratio
	sampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled})
	unsampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{2}, SpanID: trace.SpanID{2}})
	tr := Tracer(tp)
	_, a := tr.Start(context.Background(), "batch of unsampled", trace.WithLinks(trace.Link{SpanContext: unsampled}))
	a.End()
	_, b := tr.Start(context.Background(), "batch with one sampled", trace.WithLinks(trace.Link{SpanContext: unsampled}, trace.Link{SpanContext: sampled}))
	b.End()
	_, c := tr.Start(context.Background(), "root")
	c.End()
	_, d := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), sampled), "child of sampled")
	d.End()
	var names []string
	for _, s := range exp.GetSpans() {
		names = append(names, s.Name)
	}
	if len(names) != 2 || names[0] != "batch with one sampled" || names[1] != "child of sampled" {
		t.Fatalf("sampled %v, want the batch linking a sampled span and the sampled child", names)
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("PARLEY_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	t.Setenv("PARLEY_TRACE_RATIO", "")
	c, err := ConfigFromEnv("parley-edge")
	if err != nil || c.Enabled() {
		t.Fatalf("default config %+v, %v: want export off", c, err)
	}
	tp, shutdown, err := Start(context.Background(), c)
	if err != nil || tp != nil || shutdown(context.Background()) != nil {
		t.Fatalf("Start with export off = %v, %v", tp, err)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
	t.Setenv("PARLEY_TRACE_RATIO", "0.25")
	if c, err = ConfigFromEnv("parley-edge"); err != nil || !c.Enabled() || c.Ratio != 0.25 {
		t.Fatalf("config %+v, %v: want export on at 0.25", c, err)
	}
	t.Setenv("PARLEY_TRACE_RATIO", "2")
	if _, err = ConfigFromEnv("parley-edge"); err == nil {
		t.Fatal("ratio 2 accepted")
	}
	t.Setenv("PARLEY_TRACE_RATIO", "")
	t.Setenv("PARLEY_OTLP_ENDPOINT", "127.0.0.1:1")
	c, _ = ConfigFromEnv("parley-edge")
	tp, shutdown, err = Start(context.Background(), c)
	if err != nil || tp == nil {
		t.Fatalf("Start with an endpoint = %v, %v", tp, err)
	}
	// Nothing listens there: shutdown gives up on its context, not hangs.
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	_ = shutdown(ctx)
}

// FuzzExtract: whatever a record's headers hold, reading a span context
// from them neither panics nor makes up a valid one from garbage that is
// not a traceparent.
func FuzzExtract(f *testing.F) {
	f.Add("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "")
	f.Add("garbage", "k=v")
	f.Fuzz(func(t *testing.T, parent, state string) {
		r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte(parent)}, {Key: "tracestate", Value: []byte(state)}}}
		sc := SpanContext(r)
		if sc.IsValid() && len(parent) < 55 {
			t.Fatalf("valid span context from %q", parent)
		}
		_ = Links([]*kgo.Record{r})
	})
}
