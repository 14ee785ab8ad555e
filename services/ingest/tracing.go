package ingest

import (
	"context"
	"log/slog"

	"github.com/parleychat/parley/pkg/server/tracing"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Span attributes of ingest and the sequencer.
var (
	attrMessagingSystem = attribute.String("messaging.system", "kafka")
	attrDestination     = attribute.Key("messaging.destination.name")
	attrPartition       = attribute.Key("messaging.destination.partition.id")
	attrOffset          = attribute.Key("messaging.kafka.offset")
	attrCommandID       = attribute.Key("parley.command_id")
	attrConv            = attribute.Key("parley.conversation_id")
	attrSeq             = attribute.Key("parley.seq")
	attrDuplicate       = attribute.Key("parley.duplicate")
	attrErrorCode       = attribute.Key("parley.error_code")
	attrCommands        = attribute.Key("parley.commands")
	attrCommitted       = attribute.Key("parley.committed")
)

// startBatch starts the span of one sequencer batch: a root of its own,
// linked to the span context each command record carries, since one
// transaction serves many messages and a span has one parent.
func (s *Sequencer) startBatch(ctx context.Context, fetches kgo.Fetches) (context.Context, trace.Span) {
	if !s.traced {
		return ctx, trace.SpanFromContext(ctx)
	}
	return s.tracer.Start(ctx, "sequencer.batch", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(tracing.Links(fetches.Records())...),
		trace.WithAttributes(attrMessagingSystem, attrDestination.String(kgoTopic(fetches)), attrCommands.Int(fetches.NumRecords())))
}

func kgoTopic(fetches kgo.Fetches) string {
	for _, f := range fetches {
		for _, t := range f.Topics {
			return t.Topic
		}
	}
	return ""
}

// startDecide starts the span of one command's decision: the child of the
// command's append (from the record's headers), so one message's trace
// goes on unbroken, and linked to the batch whose transaction carries the
// result. The event and outcome records carry this span's context.
func (s *Sequencer) startDecide(batch context.Context, r *kgo.Record) (context.Context, trace.Span) {
	if !s.traced {
		return batch, trace.SpanFromContext(batch)
	}
	parent := tracing.Extract(batch, r)
	return s.tracer.Start(parent, "sequencer.decide", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(trace.Link{SpanContext: trace.SpanContextFromContext(batch)}),
		trace.WithAttributes(attrPartition.Int(int(r.Partition)), attrOffset.Int64(r.Offset)))
}

// decided records a decision on its span and, at debug, in the log.
func (s *Sequencer) decided(ctx context.Context, span trace.Span, cmd *logv1.Command, o *logv1.Outcome) {
	if s.traced {
		span.SetAttributes(attrCommandID.String(cmd.GetCommandId()), attrConv.String(cmd.GetConversationId()), attrSeq.Int64(int64(o.GetSeq())), attrDuplicate.Bool(o.GetDuplicate()))
		if o.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			span.SetAttributes(attrErrorCode.String(o.GetErrorCode().String()))
		}
		span.End()
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "sequencer: decided", "command_id", cmd.GetCommandId(), "conversation", cmd.GetConversationId(),
			"seq", o.GetSeq(), "duplicate", o.GetDuplicate(), "error_code", o.GetErrorCode().String())
	}
}

// endBatch records whether the batch's transaction committed.
func (s *Sequencer) endBatch(span trace.Span, committed bool, err error) {
	if !s.traced {
		return
	}
	span.SetAttributes(attrCommitted.Bool(committed))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
