package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	backendv1 "github.com/parleychat/parley/pkg/pb/parley/backend/v1"
	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	"github.com/parleychat/parley/pkg/server/mtls"
)

const backendToken = "integration-backend-token-0123456789"

// backendArgs are an edge's flags serving the backend API on a free
// address with one service token, from a file as an operator gives it.
func backendArgs(t *testing.T) []string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "backend-tokens")
	if err := os.WriteFile(file, []byte("# name token\nintegration "+backendToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"-backend-addr", freeAddr(t), "-backend-tokens-file", file}
}

// backendClient dials edge0's backend API (started with backendArgs),
// with the stack's internal mTLS when it runs with it (stack.sh env), which
// the backend API then asks for too; the client is closed with the test.
func backendClient(t *testing.T, c *cluster) backendv1.BackendServiceClient {
	t.Helper()
	var tlsSrc *mtls.Source
	if f := mtls.FromEnv(""); f.Enabled() {
		tlsSrc = open(t, f)
	}
	cc, err := grpc.NewClient(flagValue(t, c.procs["edge0"].args, "-backend-addr"), mtls.DialOption(tlsSrc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return backendv1.NewBackendServiceClient(cc)
}

// TestBackendAPIOnTheStack (real stack): an application's server, through
// edge0's backend API, creates a group as a bot and posts to it; alice on
// edge1 gets both events, and history on Cassandra has the message. A
// caller without the service token is refused before anything happens.
func TestBackendAPIOnTheStack(t *testing.T) {
	s := requireStack(t)
	c := startClusterEdges(t, s, [2][]string{backendArgs(t), nil})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	api := backendClient(t, c)
	create := &backendv1.CreateConversationRequest{CreatorId: "bot-news", Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP,
		Title: "news", MemberIds: []string{"alice"}, ClientMsgId: "create-news"}
	if _, err := api.CreateConversation(ctx, create); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("CreateConversation without a token = %v, want UNAUTHENTICATED", err)
	}

	alice := c.dial(1, "alice", "a1")
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+backendToken)
	created, err := api.CreateConversation(authed, create)
	if err != nil {
		t.Fatalf("CreateConversation: %v", err)
	}
	conv := created.GetConversationId()
	sent, err := api.SendMessage(authed, &backendv1.SendMessageRequest{SenderId: "bot-news", ConversationId: conv, ClientMsgId: "news-1", Text: "extra!"})
	if err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	for got := false; !got; {
		select {
		case ev := <-alice.Events():
			got = ev.GetConversationId() == conv && ev.GetSeq() == sent.GetSeq() && ev.GetSenderId() == "bot-news" && ev.GetMessagePosted().GetText() == "extra!"
		case <-ctx.Done():
			t.Fatal("alice on edge1 did not get the bot's message")
		}
	}
	for {
		page, err := api.GetHistory(authed, &backendv1.GetHistoryRequest{AsUserId: "alice", ConversationId: conv})
		if err == nil && len(page.GetEvents()) == 2 && page.GetEvents()[1].GetMessagePosted().GetText() == "extra!" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("history as alice = %v, %v; want the creation and the message", page, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
