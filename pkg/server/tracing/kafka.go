package tracing

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Inject writes ctx's span context into r's headers (traceparent and, when
// set, tracestate), replacing any already there. A record whose context
// is not valid gets no header. Every consumer decodes a record from its
// value alone, so headers change nothing for them; a dead letter keeps
// them (records.DeadLetterRecord), so it can be traced to its source.
func Inject(ctx context.Context, r *kgo.Record) {
	Propagator().Inject(ctx, headers{r})
}

// Extract returns ctx carrying, as its remote parent, the span context in
// r's headers; ctx unchanged when there is none or it is malformed.
func Extract(ctx context.Context, r *kgo.Record) context.Context {
	return Propagator().Extract(ctx, headers{r})
}

// SpanContext is the span context r's headers carry; not valid when none.
func SpanContext(r *kgo.Record) trace.SpanContext {
	return trace.SpanContextFromContext(Extract(context.Background(), r))
}

// Links links to each record's span context (those that carry one), with
// the record's partition and offset, for a span that handles them as one
// batch.
func Links(recs []*kgo.Record) []trace.Link {
	var links []trace.Link
	for _, r := range recs {
		if sc := SpanContext(r); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{
				attribute.Int("messaging.destination.partition.id", int(r.Partition)),
				attribute.Int64("messaging.kafka.offset", r.Offset),
			}})
		}
	}
	return links
}

// headers is a propagation.TextMapCarrier over a record's headers.
type headers struct{ r *kgo.Record }

func (h headers) Get(key string) string {
	// The last one wins, as a later writer's should.
	for i := len(h.r.Headers) - 1; i >= 0; i-- {
		if h.r.Headers[i].Key == key {
			return string(h.r.Headers[i].Value)
		}
	}
	return ""
}

func (h headers) Set(key, value string) {
	// A fresh slice: the record's may share its array with another's.
	kept := make([]kgo.RecordHeader, 0, len(h.r.Headers)+1)
	for _, hd := range h.r.Headers {
		if hd.Key != key {
			kept = append(kept, hd)
		}
	}
	h.r.Headers = append(kept, kgo.RecordHeader{Key: key, Value: []byte(value)})
}

func (h headers) Keys() []string {
	keys := make([]string, len(h.r.Headers))
	for i, hd := range h.r.Headers {
		keys[i] = hd.Key
	}
	return keys
}
