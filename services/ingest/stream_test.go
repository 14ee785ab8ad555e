package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/topics/topicstest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// runService runs an ingest service on a fresh in-process Kafka and
// dials it. stop shuts it down as a signal would; done closes once Run
// has returned, with its error in *runErr.
func runService(t *testing.T) (c ingestv1.IngestServiceClient, stop context.CancelFunc, done chan struct{}, runErr *error) {
	t.Helper()
	brokers, _ := topicstest.Cluster(t, 4)
	svc, err := New(Config{Brokers: brokers, GRPCAddr: "127.0.0.1:0", Registry: metrics.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done, runErr = make(chan struct{}), new(error)
	go func() { *runErr = svc.Run(ctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	cc, err := grpc.NewClient(svc.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return ingestv1.NewIngestServiceClient(cc), stop, done, runErr
}

// TestSubmitStreamAnswersEachByID: commands sent on one stream, many in
// flight at once, are each answered once under their own id with what a
// Submit answers: their seq, the same outcome for a retried client
// message id, and a refusal for a bad command.
func TestSubmitStreamAnswersEachByID(t *testing.T) {
	c, _, _, _ := runService(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// The conversation exists before the posts: its create is decided
	// first.
	g := uuid.Must(uuid.NewV7()).String()
	if r, err := c.Submit(ctx, &ingestv1.SubmitRequest{Command: createCmd(g, "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice", "bob")}); err != nil || r.GetOutcome().GetSeq() != 1 {
		t.Fatalf("create: %v, %v", r, err)
	}
	stream, err := c.SubmitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	// Ids 1..n post m0..m(n-1); id n+1 repeats m7; id n+2 posts nothing.
	for i := range n {
		if err := stream.Send(&ingestv1.SubmitStreamRequest{Id: uint64(i + 1), Command: postCmd(g, "alice", fmt.Sprintf("m%d", i), "hi")}); err != nil {
			t.Fatal(err)
		}
	}
	answers := map[uint64]*ingestv1.SubmitStreamResponse{}
	recv := func() {
		a, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d answers: %v", len(answers), err)
		}
		if answers[a.GetId()] != nil {
			t.Fatalf("request %d answered twice", a.GetId())
		}
		answers[a.GetId()] = a
	}
	for len(answers) < n {
		recv()
	}
	for _, r := range []*ingestv1.SubmitStreamRequest{
		{Id: n + 1, Command: postCmd(g, "alice", "m7", "hi")},
		{Id: n + 2, Command: &logv1.Command{ConversationId: g, UserId: "alice", ClientMsgId: "empty", Body: &logv1.Command_PostMessage{PostMessage: &logv1.PostMessage{}}}},
	} {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	for len(answers) < n+2 {
		recv()
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if a, err := stream.Recv(); err == nil {
		t.Fatalf("answer %v after every request was answered", a)
	}

	seqs := map[uint64]bool{}
	for i := range n {
		a := answers[uint64(i+1)]
		o := a.GetOutcome()
		if a.GetErrorCode() != 0 || o.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED || o.GetClientMsgId() != fmt.Sprintf("m%d", i) {
			t.Fatalf("request %d: %v", i+1, a)
		}
		if o.GetSeq() < 2 || o.GetSeq() > n+1 || seqs[o.GetSeq()] {
			t.Fatalf("request %d: seq %d (create is 1; posts 2..%d, each once)", i+1, o.GetSeq(), n+1)
		}
		seqs[o.GetSeq()] = true
	}
	if again := answers[n+1].GetOutcome(); !again.GetDuplicate() || again.GetSeq() != answers[8].GetOutcome().GetSeq() {
		t.Fatalf("m7 again: %v, want the duplicate of seq %d", again, answers[8].GetOutcome().GetSeq())
	}
	if bad := answers[n+2].GetOutcome(); bad.GetErrorCode() != chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("empty post: %v", answers[n+2])
	}
}

// TestSubmitStreamEndsOnShutdown: a service shutting down answers what it
// read and ends the stream as Unavailable rather than holding its
// graceful stop until the caller leaves.
func TestSubmitStreamEndsOnShutdown(t *testing.T) {
	c, stop, done, runErr := runService(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := c.SubmitStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&ingestv1.SubmitStreamRequest{Id: 1, Command: createCmd(uuid.Must(uuid.NewV7()).String(), "alice", "c1", chatv1.ConversationKind_CONVERSATION_KIND_GROUP, "alice")}); err != nil {
		t.Fatal(err)
	}
	if a, err := stream.Recv(); err != nil || a.GetOutcome().GetSeq() != 1 {
		t.Fatalf("create: %v, %v", a, err)
	}
	stop()
	select {
	case <-done:
		if *runErr != nil {
			t.Fatalf("Run: %v", *runErr)
		}
	case <-time.After(shutdownTimeout / 2):
		t.Fatal("the service did not stop while a submit stream was open")
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream after shutdown: %v, want Unavailable", err)
	}
}
