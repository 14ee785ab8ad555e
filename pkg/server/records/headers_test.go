package records

import (
	"context"
	"errors"
	"testing"

	"github.com/parleychat/parley/pkg/server/tracing"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// TestTraceHeadersChangeNothing: the sequencer now writes trace context
// into event record headers. Sorting, the seq guard's dedupe and dead
// letters must treat a record with such headers (well-formed or garbage)
// exactly as the same record without them, and a dead letter keeps them.
func TestTraceHeadersChangeNothing(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tracing.Tracer(tp).Start(context.Background(), "decide")
	defer span.End()
	value := func(seq uint64) []byte {
		b, _ := proto.Marshal(&logv1.EventRecord{Event: &chatv1.Event{ConversationId: "c", Seq: seq, EventId: "e"}, RecipientIds: []string{"u"}})
		return b
	}
	batch := func(headers func(r *kgo.Record)) []*kgo.Record {
		var recs []*kgo.Record
		// seq 1, 2, 2 again (a zombie's copy), 4 (a hole), and garbage.
		for i, v := range [][]byte{value(1), value(2), value(2), value(4), []byte("\xff")} {
			r := &kgo.Record{Topic: "events", Partition: 0, Offset: int64(i), Value: v}
			headers(r)
			recs = append(recs, r)
		}
		return recs
	}
	bare := SortEvents(batch(func(*kgo.Record) {}), &SeqGuard{})
	traced := SortEvents(batch(func(r *kgo.Record) { tracing.Inject(ctx, r) }), &SeqGuard{})
	junk := SortEvents(batch(func(r *kgo.Record) {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "traceparent", Value: []byte("\x00not-a-trace")}, kgo.RecordHeader{Key: "tracestate", Value: []byte("=")})
	}), &SeqGuard{})
	for name, b := range map[string]EventBatch{"traced": traced, "garbage headers": junk} {
		if len(b.Records) != len(bare.Records) || b.Stale != bare.Stale || len(b.Gaps) != len(bare.Gaps) || len(b.Rejected) != len(bare.Rejected) {
			t.Fatalf("%s: %d records, %d stale, %v gaps, %d rejected; bare: %d, %d, %v, %d", name,
				len(b.Records), b.Stale, b.Gaps, len(b.Rejected), len(bare.Records), bare.Stale, bare.Gaps, len(bare.Rejected))
		}
		for i := range b.Records {
			if !proto.Equal(b.Records[i], bare.Records[i]) {
				t.Fatalf("%s: record %d is %v, bare %v", name, i, b.Records[i], bare.Records[i])
			}
		}
	}
	if bare.Stale != 1 || len(bare.Gaps) != 1 || len(bare.Rejected) != 1 {
		t.Fatalf("the batch should hold one stale copy, one hole and one bad record: %+v", bare)
	}
	dl := DeadLetterRecord(traced.Rejected[0].Record, "g", errors.New("bad"))
	if sc := tracing.SpanContext(dl); sc.SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("dead letter lost the trace context: %v", dl.Headers)
	}
}
