package ingest

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/parleychat/parley/pkg/server/tracing"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
)

// MaxStreamInFlight bounds the requests of one SubmitStream being
// decided at once: beyond it ingest stops reading the stream, and gRPC's
// flow control holds the caller back.
const MaxStreamInFlight = 4096

// SubmitStream implements IngestService: each request is a Submit of its
// own, answered on the stream as soon as its outcome is known. A unary
// Submit pays a new HTTP/2 stream, its headers, a goroutine and the
// interceptors per command; an edge's commands share one stream instead
// (docs/BENCHMARKS.md).
//
// The stream ends when the caller closes its side (once every request
// read is answered) or, after the answers in flight, when the service
// shuts down: what the caller sent and ingest did not read is then
// unanswered, its outcome unknown, and the caller retries it.
func (s *Service) SubmitStream(stream ingestv1.IngestService_SubmitStreamServer) error {
	ctx := stream.Context()
	answers := make(chan *ingestv1.SubmitStreamResponse, 64)
	sent := make(chan error, 1)
	go func() {
		var err error
		for a := range answers {
			if err == nil {
				err = stream.Send(a)
			}
		}
		sent <- err
	}()
	reqs := make(chan *ingestv1.SubmitStreamRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				recvErr <- ctx.Err()
				return
			}
		}
	}()

	var open sync.WaitGroup
	slots := make(chan struct{}, MaxStreamInFlight)
	var end error
loop:
	for {
		select {
		case req := <-reqs:
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				end = ctx.Err()
				break loop
			}
			open.Add(1)
			go func() {
				defer open.Done()
				defer func() { <-slots }()
				answers <- s.submitOnStream(ctx, req)
			}()
		case err := <-recvErr:
			if !errors.Is(err, io.EOF) {
				end = err
			}
			break loop
		case <-s.stopping:
			end = status.Error(codes.Unavailable, "ingest is shutting down; submit again with the same ids")
			break loop
		}
	}
	open.Wait()
	close(answers)
	if err := <-sent; err != nil && end == nil {
		end = err
	}
	return end
}

// submitOnStream answers one request of a SubmitStream, in a span as a
// unary Submit's server span would be, child of the caller's.
func (s *Service) submitOnStream(ctx context.Context, req *ingestv1.SubmitStreamRequest) *ingestv1.SubmitStreamResponse {
	ctx = tracing.Received(ctx, req.GetTrace())
	ctx, span := s.tracer.Start(ctx, submitSpan, trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	o, err := s.submit(ctx, req.GetCommand())
	a := &ingestv1.SubmitStreamResponse{Id: req.GetId(), Outcome: o}
	if err != nil {
		st := status.Convert(err)
		a.ErrorCode, a.ErrorMessage = uint32(st.Code()), st.Message()
		span.RecordError(err)
	}
	s.streamed.WithLabelValues(codes.Code(a.ErrorCode).String()).Inc()
	return a
}

// submitSpan names the spans of a streamed Submit as otelgrpc names a
// unary one's (the method without its leading slash), so that a trace
// reads the same either way.
var submitSpan = strings.TrimPrefix(ingestv1.IngestService_Submit_FullMethodName, "/")
