package edge

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/parleychat/parley/pkg/server/tracing"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// Span attributes the edge sets.
const (
	attrFrameType = attribute.Key("parley.frame.type")
	attrRequestID = attribute.Key("parley.request_id")
	attrErrorCode = attribute.Key("parley.error_code")
	attrConv      = attribute.Key("parley.conversation_id")
)

// startFrame starts the span of one client frame, the root of whatever
// the frame causes, and names the request in ctx: by the client's
// request id, or, when the frame has none, by one made up for the logs.
func (c *conn) startFrame(ctx context.Context, f *clientv1.ClientFrame) (context.Context, trace.Span, string) {
	typ := frameType(f)
	id := f.GetRequestId()
	if id == "" {
		id = "e" + strconv.FormatUint(rand.Uint64(), 36)
	}
	ctx = tracing.WithRequestID(ctx, id)
	ctx, span := c.svc.tracer.Start(ctx, "edge.frame", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attrFrameType.String(typ), attrRequestID.String(tracing.RequestID(ctx))))
	return ctx, span, typ
}

// endFrame records the answer on the frame's span and in the log: a
// failure the service caused (unavailable, internal) at warn, the rest at
// debug.
func (c *conn) endFrame(ctx context.Context, span trace.Span, typ string, start time.Time, out *clientv1.ServerFrame) {
	defer span.End()
	code := out.GetError().GetCode()
	level := slog.LevelDebug
	if code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		span.SetAttributes(attrErrorCode.String(code.String()))
		if code == chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE || code == chatv1.ErrorCode_ERROR_CODE_INTERNAL {
			span.SetStatus(codes.Error, out.GetError().GetMessage())
			level = slog.LevelWarn
		}
	}
	if c.svc.log.Enabled(ctx, level) {
		c.svc.log.Log(ctx, level, "edge: frame answered", "type", typ, "user", c.user, "session", c.session,
			"error_code", code.String(), "took", time.Since(start))
	}
}

// frameType is the name of the frame's body, as the protocol spells it
// (send_message, ping, …).
func frameType(f *clientv1.ClientFrame) string {
	m := f.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("frame"))
	if fd == nil {
		return "unknown"
	}
	return string(fd.Name())
}

// pushed records on the Push call's span (made by the gRPC stats handler,
// child of fan-out's) how many deliveries it brought and how many
// connection queues took one.
func (s *Service) pushed(ctx context.Context, deliveries, queued int) {
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int("parley.deliveries", deliveries), attribute.Int("parley.queued", queued))
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "edge: push queued", "deliveries", deliveries, "queued", queued)
	}
}
