package edge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/parleychat/parley/pkg/server/tracing"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
)

// streamedIngest is ingest's client with every Submit sent on one
// SubmitStream: a unary call per command cost the edge and ingest a new
// HTTP/2 stream, its headers and a goroutine each (docs/BENCHMARKS.md).
// Heads and anything else stay unary. Against an ingest without
// SubmitStream (a rolling upgrade) it falls back to unary Submits.
type streamedIngest struct {
	ingestv1.IngestServiceClient
	tracer trace.Tracer
	log    *slog.Logger
	// unary is set once ingest answered Unimplemented.
	unary atomic.Bool

	mu  sync.Mutex
	cur *submitStream // nil until the first Submit, and after a stream ends
	// opening is the stream being opened, if one is.
	opening *openAttempt
	nextID  uint64
	closed  bool
}

// submitSpan names a streamed Submit's client span as otelgrpc names a
// unary call's, so that a trace reads the same either way.
var submitSpan = strings.TrimPrefix(ingestv1.IngestService_Submit_FullMethodName, "/")

func newStreamedIngest(c ingestv1.IngestServiceClient, tracer trace.Tracer, log *slog.Logger) *streamedIngest {
	return &streamedIngest{IngestServiceClient: c, tracer: tracer, log: log}
}

// submitStream is one open SubmitStream and its requests not yet answered.
type submitStream struct {
	send    chan *ingestv1.SubmitStreamRequest
	cancel  context.CancelFunc
	waiting map[uint64]chan *ingestv1.SubmitStreamResponse // guarded by streamedIngest.mu
	// err, set before done closes, fails every request still waiting.
	err  error
	done chan struct{}
}

// Submit implements ingestv1.IngestServiceClient on the shared stream.
func (c *streamedIngest) Submit(ctx context.Context, req *ingestv1.SubmitRequest, opts ...grpc.CallOption) (*ingestv1.SubmitResponse, error) {
	if c.unary.Load() {
		return c.IngestServiceClient.Submit(ctx, req, opts...)
	}
	ctx, span := c.tracer.Start(ctx, submitSpan, trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	resp, err := c.submit(ctx, req)
	if status.Code(err) == codes.Unimplemented {
		// Ingest read none of the stream: the command is not in the log.
		if c.unary.CompareAndSwap(false, true) {
			c.log.Warn("edge: ingest has no SubmitStream; submitting one call per command")
		}
		resp, err = c.IngestServiceClient.Submit(ctx, req, opts...)
	}
	if err != nil {
		span.SetStatus(otelcodes.Error, err.Error())
	}
	return resp, err
}

func (c *streamedIngest) submit(ctx context.Context, req *ingestv1.SubmitRequest) (*ingestv1.SubmitResponse, error) {
	st, id, answer, err := c.open(ctx)
	if err != nil {
		return nil, err
	}
	defer c.forget(st, id)
	r := &ingestv1.SubmitStreamRequest{Id: id, Command: req.GetCommand(), Trace: tracing.Carry(ctx)}
	select {
	case st.send <- r:
	case <-st.done:
		return nil, st.err
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	select {
	case a := <-answer:
		return answered(a)
	case <-st.done:
		// The stream ended after the request was sent: unless its answer
		// came first, whether ingest read it is unknown, so is its
		// outcome.
		select {
		case a := <-answer:
			return answered(a)
		default:
			return nil, st.err
		}
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// answered is what a unary Submit would have returned for a.
func answered(a *ingestv1.SubmitStreamResponse) (*ingestv1.SubmitResponse, error) {
	if a.GetErrorCode() != uint32(codes.OK) {
		return nil, status.Error(codes.Code(a.GetErrorCode()), a.GetErrorMessage())
	}
	return &ingestv1.SubmitResponse{Outcome: a.GetOutcome()}, nil
}

// open registers a request on the current stream, opening one if there is
// none: the stream, the request's id and where its answer comes.
func (c *streamedIngest) open(ctx context.Context) (*submitStream, uint64, chan *ingestv1.SubmitStreamResponse, error) {
	c.mu.Lock()
	for {
		if c.closed {
			c.mu.Unlock()
			return nil, 0, nil, status.Error(codes.Unavailable, "edge is closing its ingest client")
		}
		if st := c.cur; st != nil {
			c.nextID++
			id := c.nextID
			answer := make(chan *ingestv1.SubmitStreamResponse, 1)
			st.waiting[id] = answer
			c.mu.Unlock()
			return st, id, answer, nil
		}
		// Opening a stream waits while the connection is being made, so
		// it runs on its own and each Submit waits for it at most its
		// own deadline.
		at := c.opening
		if at == nil {
			at = &openAttempt{done: make(chan struct{})}
			c.opening = at
			go c.openStream(at)
		}
		c.mu.Unlock()
		select {
		case <-at.done:
			if at.err != nil {
				return nil, 0, nil, at.err
			}
		case <-ctx.Done():
			return nil, 0, nil, status.FromContextError(ctx.Err()).Err()
		}
		c.mu.Lock()
	}
}

// openAttempt is one opening of the stream; err is set before done
// closes.
type openAttempt struct {
	done chan struct{}
	err  error
}

func (c *streamedIngest) openStream(at *openAttempt) {
	// The stream outlives the request that opens it, and is no part of
	// its trace.
	sctx, cancel := context.WithCancel(context.Background())
	stream, err := c.IngestServiceClient.SubmitStream(sctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opening = nil
	defer close(at.done)
	if err == nil && c.closed {
		err = status.Error(codes.Unavailable, "edge is closing its ingest client")
	}
	if err != nil {
		cancel()
		at.err = err
		return
	}
	st := &submitStream{send: make(chan *ingestv1.SubmitStreamRequest), cancel: cancel,
		waiting: map[uint64]chan *ingestv1.SubmitStreamResponse{}, done: make(chan struct{})}
	c.cur = st
	go c.pump(st, stream)
}

func (c *streamedIngest) forget(st *submitStream, id uint64) {
	c.mu.Lock()
	delete(st.waiting, id)
	c.mu.Unlock()
}

// pump sends st's requests and hands out its answers until the stream
// ends, then fails what still waits and lets the next Submit open
// another stream.
func (c *streamedIngest) pump(st *submitStream, stream ingestv1.IngestService_SubmitStreamClient) {
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		for {
			select {
			case r := <-st.send:
				if stream.Send(r) != nil {
					return // Recv below gets the stream's status
				}
			case <-st.done:
				return
			}
		}
	}()
	var err error
	for {
		var a *ingestv1.SubmitStreamResponse
		if a, err = stream.Recv(); err != nil {
			break
		}
		c.mu.Lock()
		if ch := st.waiting[a.GetId()]; ch != nil {
			delete(st.waiting, a.GetId())
			ch <- a
		}
		c.mu.Unlock()
	}
	if errors.Is(err, io.EOF) {
		err = status.Error(codes.Unavailable, "ingest ended the submit stream")
	}
	if status.Code(err) != codes.Unimplemented {
		c.log.Info("edge: submit stream ended; the next Submit opens another", "err", err)
	}
	c.mu.Lock()
	if c.cur == st {
		c.cur = nil
	}
	st.err = status.Error(status.Code(err), "submit stream ended, outcome unknown ("+status.Convert(err).Message()+"); retry with the same client_msg_id")
	if status.Code(err) == codes.Unimplemented {
		st.err = err
	}
	close(st.done)
	c.mu.Unlock()
	st.cancel()
	<-sendDone
}

// Close ends the stream; the requests it still carries fail as
// Unavailable, as unary calls on a closed connection would.
func (c *streamedIngest) Close() error {
	c.mu.Lock()
	c.closed = true
	st := c.cur
	c.mu.Unlock()
	if st != nil {
		st.cancel()
		<-st.done
	}
	return nil
}
