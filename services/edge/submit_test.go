package edge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// streamIngest is an ingest whose SubmitStream answers each request with
// the seq its client message id names ("m7" is seq 7), held back until
// hold requests have come, then in the reverse order. A request whose id
// starts with "refuse" is answered Unavailable; one starting with "break"
// ends the stream, answering nothing. Unary Submits answer alike.
type streamIngest struct {
	ingestv1.UnimplementedIngestServiceServer
	hold    atomic.Int32
	streams atomic.Int32
	unary   atomic.Int32
}

func answerOf(req *ingestv1.SubmitStreamRequest) *ingestv1.SubmitStreamResponse {
	id := req.GetCommand().GetClientMsgId()
	if strings.HasPrefix(id, "refuse") {
		return &ingestv1.SubmitStreamResponse{Id: req.GetId(), ErrorCode: uint32(codes.Unavailable), ErrorMessage: "append command: no broker"}
	}
	var seq uint64
	fmt.Sscanf(id, "m%d", &seq)
	return &ingestv1.SubmitStreamResponse{Id: req.GetId(), Outcome: &logv1.Outcome{ClientMsgId: id, Seq: seq}}
}

func (f *streamIngest) SubmitStream(stream ingestv1.IngestService_SubmitStreamServer) error {
	f.streams.Add(1)
	var held []*ingestv1.SubmitStreamRequest
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if strings.HasPrefix(req.GetCommand().GetClientMsgId(), "break") {
			return status.Error(codes.Unavailable, "ingest went away")
		}
		held = append(held, req)
		if len(held) < int(f.hold.Load()) {
			continue
		}
		for i := len(held) - 1; i >= 0; i-- {
			if err := stream.Send(answerOf(held[i])); err != nil {
				return err
			}
		}
		held = held[:0]
	}
}

// unaryIngest has no SubmitStream, as an ingest of before it.
type unaryIngest struct {
	ingestv1.UnimplementedIngestServiceServer
	calls atomic.Int32
}

func (f *unaryIngest) Submit(_ context.Context, req *ingestv1.SubmitRequest) (*ingestv1.SubmitResponse, error) {
	f.calls.Add(1)
	return &ingestv1.SubmitResponse{Outcome: answerOf(&ingestv1.SubmitStreamRequest{Command: req.GetCommand()}).GetOutcome()}, nil
}

func serveIngest(t *testing.T, srv ingestv1.IngestServiceServer) *streamedIngest {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	ingestv1.RegisterIngestServiceServer(g, srv)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := newStreamedIngest(ingestv1.NewIngestServiceClient(cc), noop.NewTracerProvider().Tracer(""), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { c.Close() })
	return c
}

func submitID(ctx context.Context, c *streamedIngest, id string) (*ingestv1.SubmitResponse, error) {
	return c.Submit(ctx, &ingestv1.SubmitRequest{Command: &logv1.Command{ClientMsgId: id}})
}

// TestStreamedSubmitsAnsweredByID: Submits in flight at once share one
// stream, and each gets its own answer though ingest answers them in
// another order.
func TestStreamedSubmitsAnsweredByID(t *testing.T) {
	srv := &streamIngest{}
	srv.hold.Store(25)
	c := serveIngest(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			id := fmt.Sprintf("m%d", i+1)
			resp, err := submitID(ctx, c, id)
			if err != nil || resp.GetOutcome().GetClientMsgId() != id || resp.GetOutcome().GetSeq() != uint64(i+1) {
				t.Errorf("Submit of %s: %v, %v", id, resp, err)
			}
		})
	}
	wg.Wait()
	if n := srv.streams.Load(); n != 1 {
		t.Fatalf("100 Submits opened %d streams, want 1", n)
	}
	// An answer that is an error is that Submit's error alone.
	srv.hold.Store(1)
	if _, err := submitID(ctx, c, "refuse-1"); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no broker") {
		t.Fatalf("refused Submit: %v, want ingest's Unavailable", err)
	}
	if resp, err := submitID(ctx, c, "m101"); err != nil || resp.GetOutcome().GetSeq() != 101 {
		t.Fatalf("Submit after a refusal: %v, %v", resp, err)
	}
}

// TestStreamedSubmitsFailWithTheStream: when the stream ends, every Submit
// it carried unanswered fails as Unavailable (its outcome unknown: the
// client retries with the same id), and the next Submit opens another.
func TestStreamedSubmitsFailWithTheStream(t *testing.T) {
	srv := &streamIngest{}
	srv.hold.Store(1000)
	c := serveIngest(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := range 3 {
		wg.Go(func() {
			_, err := submitID(ctx, c, fmt.Sprintf("m%d", i+1))
			errs <- err
		})
	}
	// The three are held; once they are on the stream, break it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		n := 0
		if c.cur != nil {
			n = len(c.cur.waiting)
		}
		c.mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // sent, not only registered
	if _, err := submitID(ctx, c, "break"); status.Code(err) != codes.Unavailable {
		t.Fatalf("the Submit that broke the stream: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "retry with the same client_msg_id") {
			t.Fatalf("Submit on the broken stream: %v, want Unavailable with a retry", err)
		}
	}
	srv.hold.Store(1)
	if resp, err := submitID(ctx, c, "m9"); err != nil || resp.GetOutcome().GetSeq() != 9 {
		t.Fatalf("Submit after the stream broke: %v, %v", resp, err)
	}
	if n := srv.streams.Load(); n != 2 {
		t.Fatalf("%d streams opened, want 2", n)
	}
}

// TestStreamedSubmitsFallBackToUnary: an ingest without SubmitStream (a
// rolling upgrade) gets unary Submits, and is asked for a stream once.
func TestStreamedSubmitsFallBackToUnary(t *testing.T) {
	srv := &unaryIngest{}
	c := serveIngest(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		id := fmt.Sprintf("m%d", i+1)
		if resp, err := submitID(ctx, c, id); err != nil || resp.GetOutcome().GetSeq() != uint64(i+1) {
			t.Fatalf("Submit of %s: %v, %v", id, resp, err)
		}
	}
	if n := srv.calls.Load(); n != 3 {
		t.Fatalf("%d unary calls, want 3", n)
	}
	if !c.unary.Load() {
		t.Fatal("still trying streams")
	}
}

// TestStreamedSubmitsKeepTheirDeadlines: while the stream cannot be
// opened (an ingest that takes the connection and never answers), each
// Submit fails at its own deadline, not when the connection attempt
// gives up.
func TestStreamedSubmitsKeepTheirDeadlines(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
		}
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := newStreamedIngest(ingestv1.NewIngestServiceClient(cc), noop.NewTracerProvider().Tracer(""), slog.New(slog.DiscardHandler))
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := submitID(ctx, c, fmt.Sprintf("m%d", i))
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("Submit %d: %v, want DeadlineExceeded", i, err)
			}
			// gRPC's own connection attempt lasts 20 s.
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Submit %d returned after %v, its deadline was 300ms", i, took)
			}
		})
	}
	wg.Wait()
}
