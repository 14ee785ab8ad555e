package platform_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/pkg/server/tracing"
	"github.com/parleychat/parley/services/platform"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestTracingFollowsOneMessage sends one message over a WebSocket and
// follows it through the spans every hop made, by parent and by link:
// the edge's frame, ingest's Submit (client and server) and the command's
// append, the sequencer's decision (child of the append, through the
// command record's headers) and its batch, fan-out's batch (linked to the
// decision, through the event record's headers), and the Push to the
// edge (client and server). Any hop that drops the context breaks a
// parent or a link and fails the test. The log lines of the request
// carry the same trace id.
func TestTracingFollowsOneMessage(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(tracing.Sampler(1)))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	logs := &syncBuffer{}
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), TracerProvider: tp, Logger: log})
	defer stop()
	ctx := tctx(t)
	alice := e.dial("alice", "alice-phone", false)
	bob := e.dial("bob", "bob-phone", false)
	open, err := alice.OpenDirect(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	conv := open.GetConversationId()
	acc, err := alice.Send(ctx, conv, "traced")
	if err != nil {
		t.Fatal(err)
	}
	if evs := bob.upTo(t, conv, acc.GetSeq()); evs[len(evs)-1].GetMessagePosted().GetText() != "traced" {
		t.Fatalf("bob got %v", evs[len(evs)-1])
	}

	// The edge's Push span ends after its answer, which may be after bob
	// read the event: wait for the chain to be complete.
	var c chain
	deadline := time.Now().Add(10 * time.Second)
	for {
		c = follow(exp.GetSpans().Snapshots())
		if c.err == "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c.err != "" {
		t.Fatalf("broken span chain: %s\nspans:\n%s", c.err, describe(exp.GetSpans().Snapshots()))
	}
	if got := attr(c.decide, "parley.seq"); got.AsInt64() != int64(acc.GetSeq()) {
		t.Errorf("decision span seq %v, want %d", got, acc.GetSeq())
	}
	if got := attr(c.pushServer, "parley.queued"); got.AsInt64() < 1 {
		t.Errorf("push span queued %v, want at least 1", got)
	}
	if got := attr(c.frame, "parley.conversation_id"); got.AsString() != conv {
		t.Errorf("frame span conversation %v, want %s", got, conv)
	}

	// The request's log lines carry its trace id, and the edge's its
	// request id.
	traceID := c.frame.SpanContext().TraceID().String()
	requestID := attr(c.frame, "parley.request_id").AsString()
	seen := map[string]bool{}
	for _, line := range logs.lines(t) {
		if line["trace_id"] != traceID {
			continue
		}
		seen[line["msg"].(string)] = true
		if line["msg"] == "edge: frame answered" && line["request_id"] != requestID {
			t.Errorf("edge line %v: want request_id %q", line, requestID)
		}
	}
	for _, msg := range []string{"edge: frame answered", "ingest: submitted", "sequencer: decided"} {
		if !seen[msg] {
			t.Errorf("no %q line with trace_id %s; lines with it: %v", msg, traceID, seen)
		}
	}
	// Fan-out's batch is a trace of its own, linked to the message's; its
	// line comes once every Push returned, so it may still be due.
	pushed := func() bool {
		for _, line := range logs.lines(t) {
			if line["msg"] == "fanout: batch pushed" && line["trace_id"] == c.fanoutBatch.SpanContext().TraceID().String() {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !pushed() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !pushed() {
		t.Errorf("no fan-out line with its batch's trace id %s", c.fanoutBatch.SpanContext().TraceID())
	}
}

// chain is one message's spans, hop by hop.
type chain struct {
	frame, submitClient, submitServer, appendCmd, decide sdktrace.ReadOnlySpan
	seqBatch, fanoutBatch, pushClient, pushServer        sdktrace.ReadOnlySpan
	// err names the first hop not found.
	err string
}

// follow finds the send_message frame and walks from it to the edge's
// Push, each hop the child of, or linked to, the one before.
func follow(spans []sdktrace.ReadOnlySpan) chain {
	var c chain
	find := func(what string, ok func(s sdktrace.ReadOnlySpan) bool) sdktrace.ReadOnlySpan {
		if c.err != "" {
			return nil
		}
		for _, s := range spans {
			if ok(s) {
				return s
			}
		}
		c.err = "no " + what
		return nil
	}
	childOf := func(name string, kind trace.SpanKind, parent *sdktrace.ReadOnlySpan) func(s sdktrace.ReadOnlySpan) bool {
		return func(s sdktrace.ReadOnlySpan) bool {
			p := *parent
			return s.Name() == name && s.SpanKind() == kind && s.Parent().SpanID() == p.SpanContext().SpanID() &&
				s.SpanContext().TraceID() == p.SpanContext().TraceID()
		}
	}
	linksTo := func(s sdktrace.ReadOnlySpan, to sdktrace.ReadOnlySpan) bool {
		for _, l := range s.Links() {
			if l.SpanContext.SpanID() == to.SpanContext().SpanID() && l.SpanContext.TraceID() == to.SpanContext().TraceID() {
				return true
			}
		}
		return false
	}
	c.frame = find("edge.frame span of send_message", func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "edge.frame" && attr(s, "parley.frame.type").AsString() == "send_message"
	})
	c.submitClient = find("Submit client span, child of the frame", childOf("parley.ingest.v1.IngestService/Submit", trace.SpanKindClient, &c.frame))
	c.submitServer = find("Submit server span, child of the client's", childOf("parley.ingest.v1.IngestService/Submit", trace.SpanKindServer, &c.submitClient))
	c.appendCmd = find("ingest.append span, child of Submit", childOf("ingest.append", trace.SpanKindProducer, &c.submitServer))
	c.decide = find("sequencer.decide span, child of the append (record headers)", childOf("sequencer.decide", trace.SpanKindConsumer, &c.appendCmd))
	c.seqBatch = find("sequencer.batch span linked to the append and linked from the decision", func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "sequencer.batch" && linksTo(s, c.appendCmd) && linksTo(c.decide, s)
	})
	c.fanoutBatch = find("fanout.batch span linked to the decision (record headers)", func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "fanout.batch" && linksTo(s, c.decide)
	})
	c.pushClient = find("Push client span, child of fan-out's batch", childOf("parley.edge.v1.EdgeService/Push", trace.SpanKindClient, &c.fanoutBatch))
	c.pushServer = find("Push server span at the edge, child of the client's", childOf("parley.edge.v1.EdgeService/Push", trace.SpanKindServer, &c.pushClient))
	find("persistence.batch span linked to the decision", func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "persistence.batch" && linksTo(s, c.decide)
	})
	return c
}

func attr(s sdktrace.ReadOnlySpan, key string) attribute.Value {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value
		}
	}
	return attribute.Value{}
}

func describe(spans []sdktrace.ReadOnlySpan) string {
	var b bytes.Buffer
	for _, s := range spans {
		b.WriteString(s.Name() + " " + s.SpanKind().String() + " trace=" + s.SpanContext().TraceID().String() +
			" span=" + s.SpanContext().SpanID().String() + " parent=" + s.Parent().SpanID().String())
		for _, l := range s.Links() {
			b.WriteString(" link=" + l.SpanContext.SpanID().String())
		}
		b.WriteString("\n")
	}
	return b.String()
}

// syncBuffer is a log destination many goroutines write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, line)
	}
	return out
}
