package platform_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/services/edge"
	"github.com/parleychat/parley/services/platform"

	backendv1 "github.com/parleychat/parley/pkg/pb/parley/backend/v1"
	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
)

const backendToken = "test-backend-token-0123456789abcdef"

// startBackend starts the platform with the backend API on, and a client
// of it whose calls carry no credentials unless the context does.
func startBackend(t *testing.T) (*env, backendv1.BackendServiceClient, *grpc.ClientConn, func()) {
	t.Helper()
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), BackendAddr: "127.0.0.1:0",
		BackendTokens: []edge.BackendToken{{Name: "test-app", Token: backendToken}}})
	cc, err := grpc.NewClient(e.p.Edge.BackendAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return e, backendv1.NewBackendServiceClient(cc), cc, stop
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// parleyCode is the Parley error code a backend refusal carries.
func parleyCode(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == "parley.chat.v1" {
			return info.GetReason()
		}
	}
	return ""
}

func TestBackendAPIRefusesCallersWithoutAServiceToken(t *testing.T) {
	e, api, cc, stop := startBackend(t)
	defer stop()
	ctx := tctx(t)
	room := uuid.Must(uuid.NewV7()).String()
	create := &backendv1.CreateConversationRequest{CreatorId: "bot", ConversationId: room, Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "room", ClientMsgId: "c1"}
	for name, cctx := range map[string]context.Context{
		"no token":        ctx,
		"a wrong token":   withToken(ctx, strings.Repeat("x", len(backendToken))),
		"another scheme":  metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+backendToken),
		"a token's start": withToken(ctx, backendToken[:20]),
	} {
		if _, err := api.CreateConversation(cctx, create); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: CreateConversation = %v, want UNAUTHENTICATED", name, err)
		}
		if _, err := api.GetHistory(cctx, &backendv1.GetHistoryRequest{AsUserId: "bot", ConversationId: "x"}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: GetHistory = %v, want UNAUTHENTICATED", name, err)
		}
	}
	// Reflection tells nothing either without one, and everything with it.
	services := func(ctx context.Context) ([]string, error) {
		// The stream ends with the call, or the server's graceful stop
		// would wait for it.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		st, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		// A server that refuses the stream may end it before the request
		// is sent: Send then says io.EOF, and Recv has the status.
		if err := st.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := st.Recv()
		if err != nil {
			return nil, err
		}
		var out []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			out = append(out, s.GetName())
		}
		return out, nil
	}
	if got, err := services(ctx); status.Code(err) != codes.Unauthenticated {
		t.Errorf("reflection without a token = %v, %v; want UNAUTHENTICATED", got, err)
	}
	got, err := services(withToken(ctx, backendToken))
	if err != nil || !strings.Contains(strings.Join(got, " "), "parley.backend.v1.BackendService") {
		t.Errorf("reflection with the token = %v, %v; want parley.backend.v1.BackendService listed", got, err)
	}
	// Each refusal is counted (8 calls and the reflection stream).
	if page := e.metricsPage(t); !strings.Contains(page, "parley_backend_refused_total 9\n") {
		t.Errorf("refusals counted: %s", grepLines(page, "parley_backend_refused"))
	}
	// Nothing the refused calls asked for happened: the conversation they
	// would have created does not exist, and creating it now is no
	// duplicate.
	if _, err := api.GetHistory(withToken(ctx, backendToken), &backendv1.GetHistoryRequest{AsUserId: "bot", ConversationId: room}); status.Code(err) != codes.NotFound {
		t.Errorf("history after refused calls = %v, want NOT_FOUND", err)
	}
	if got, err := api.CreateConversation(withToken(ctx, backendToken), create); err != nil || got.GetDuplicate() || got.GetConversationId() != room {
		t.Errorf("CreateConversation with the token = %v, %v; want %s created now", got, err, room)
	}
}

func TestBackendAPISendsAsABotAndManagesMembers(t *testing.T) {
	e, api, _, stop := startBackend(t)
	defer stop()
	ctx := withToken(tctx(t), backendToken)
	alice := e.dial("alice", "alice-phone", false)
	bob := e.dial("bob", "bob-phone", true)

	created, err := api.CreateConversation(ctx, &backendv1.CreateConversationRequest{
		CreatorId: "bot-weather", Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "forecasts",
		MemberIds: []string{"alice", "bob"}, ClientMsgId: "create-1",
	})
	if err != nil {
		t.Fatalf("CreateConversation: %v", err)
	}
	conv := created.GetConversationId()
	if conv == "" || created.GetSeq() != 1 {
		t.Fatalf("CreateConversation = %v, want a conversation at seq 1", created)
	}

	sent, err := api.SendMessage(ctx, &backendv1.SendMessageRequest{SenderId: "bot-weather", ConversationId: conv, ClientMsgId: "m-1", Text: "rain at 5"})
	if err != nil || sent.GetDuplicate() {
		t.Fatalf("SendMessage = %v, %v", sent, err)
	}
	// A retry is the same message, not a second one.
	again, err := api.SendMessage(ctx, &backendv1.SendMessageRequest{SenderId: "bot-weather", ConversationId: conv, ClientMsgId: "m-1", Text: "rain at 5"})
	if err != nil || !again.GetDuplicate() || again.GetSeq() != sent.GetSeq() {
		t.Fatalf("retried SendMessage = %v, %v; want a duplicate of seq %d", again, err, sent.GetSeq())
	}
	for _, d := range []*device{alice, bob} {
		evs := d.upTo(t, conv, sent.GetSeq())
		last := evs[len(evs)-1]
		if last.GetSenderId() != "bot-weather" || last.GetMessagePosted().GetText() != "rain at 5" || last.GetSenderDeviceId() != "backend:test-app" {
			t.Fatalf("%s got %v, want the bot's message from backend:test-app", d.UserID, last)
		}
	}

	// The sequencer's rules hold, and each refusal carries the code a
	// client would get: to a non-member the conversation does not exist,
	// and a plain member cannot remove another.
	_, err = api.SendMessage(ctx, &backendv1.SendMessageRequest{SenderId: "mallory", ConversationId: conv, ClientMsgId: "m-2", Text: "hi"})
	if status.Code(err) != codes.NotFound || parleyCode(err) != "ERROR_CODE_NOT_FOUND" {
		t.Fatalf("SendMessage as a non-member = %v (reason %q), want NOT_FOUND with ERROR_CODE_NOT_FOUND", err, parleyCode(err))
	}
	_, err = api.RemoveMember(ctx, &backendv1.RemoveMemberRequest{ActorId: "alice", ConversationId: conv, UserId: "bob", ClientMsgId: "alice-removes-bob"})
	if status.Code(err) != codes.PermissionDenied || parleyCode(err) != "ERROR_CODE_PERMISSION_DENIED" {
		t.Fatalf("RemoveMember by a plain member = %v (reason %q), want PERMISSION_DENIED with ERROR_CODE_PERMISSION_DENIED", err, parleyCode(err))
	}
	if _, err := api.SendMessage(ctx, &backendv1.SendMessageRequest{SenderId: "bot-weather", ConversationId: conv, Text: "no id"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SendMessage without client_msg_id = %v, want INVALID_ARGUMENT", err)
	}
	if _, err := api.SendMessage(ctx, &backendv1.SendMessageRequest{ConversationId: conv, ClientMsgId: "m-3", Text: "from nobody"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SendMessage without sender_id = %v, want INVALID_ARGUMENT", err)
	}
	if _, err := api.SendMessage(ctx, &backendv1.SendMessageRequest{SenderId: "bot\x00weather", ConversationId: conv, ClientMsgId: "m-4", Text: "nul"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SendMessage from a user id with a NUL = %v, want INVALID_ARGUMENT", err)
	}
	if _, err := api.GetHistory(ctx, &backendv1.GetHistoryRequest{AsUserId: "alice\x00", ConversationId: conv}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetHistory as a user id with a NUL = %v, want INVALID_ARGUMENT", err)
	}

	added, err := api.AddMember(ctx, &backendv1.AddMemberRequest{ActorId: "bot-weather", ConversationId: conv, UserId: "carol", ClientMsgId: "add-carol"})
	if err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	removed, err := api.RemoveMember(ctx, &backendv1.RemoveMemberRequest{ActorId: "bot-weather", ConversationId: conv, UserId: "bob", ClientMsgId: "remove-bob"})
	if err != nil {
		t.Fatalf("RemoveMember: %v", err)
	}
	if removed.GetSeq() != added.GetSeq()+1 {
		t.Fatalf("AddMember at %d, RemoveMember at %d: want consecutive seqs", added.GetSeq(), removed.GetSeq())
	}
	evs := alice.upTo(t, conv, removed.GetSeq())
	if evs[len(evs)-2].GetMemberAdded().GetUserId() != "carol" || evs[len(evs)-1].GetMemberRemoved().GetUserId() != "bob" {
		t.Fatalf("alice's last events %v, want carol added then bob removed", evs[len(evs)-2:])
	}

	// History, read as a member once persistence has the last event; bob
	// is no longer one.
	var page *backendv1.GetHistoryResponse
	deadline := time.Now().Add(10 * time.Second)
	for {
		page, err = api.GetHistory(ctx, &backendv1.GetHistoryRequest{AsUserId: "carol", ConversationId: conv})
		if err == nil && len(page.GetEvents()) > 0 && page.GetEvents()[len(page.GetEvents())-1].GetSeq() == removed.GetSeq() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetHistory as carol = %v, %v; want events up to seq %d", page, err, removed.GetSeq())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var texts []string
	for _, ev := range page.GetEvents() {
		if m := ev.GetMessagePosted(); m != nil {
			texts = append(texts, m.GetText())
		}
	}
	if len(texts) != 1 || texts[0] != "rain at 5" {
		t.Fatalf("history messages %q, want exactly the one message", texts)
	}
	_, err = api.GetHistory(ctx, &backendv1.GetHistoryRequest{AsUserId: "mallory", ConversationId: conv})
	if status.Code(err) != codes.NotFound || parleyCode(err) != "ERROR_CODE_NOT_FOUND" {
		t.Fatalf("GetHistory as a non-member = %v, want NOT_FOUND (as for an unknown conversation)", err)
	}
	if first := page.GetEvents()[0]; first.GetSeq() != 1 || first.GetConversationCreated().GetTitle() != "forecasts" || first.GetSenderId() != "bot-weather" {
		t.Fatalf("history's first event %v, want the bot's creation of forecasts", first)
	}

	// The application as itself: no membership needed, and the message
	// says it is the system's.
	notice, err := api.SendMessage(ctx, &backendv1.SendMessageRequest{AsSystem: true, ConversationId: conv, ClientMsgId: "notice-1", Text: "maintenance at 22:00"})
	if err != nil {
		t.Fatalf("SendMessage as the system: %v", err)
	}
	evs = alice.upTo(t, conv, notice.GetSeq())
	if ev := evs[len(evs)-1]; !ev.GetMessagePosted().GetSystem() || ev.GetSenderId() != "system" || ev.GetMessagePosted().GetText() != "maintenance at 22:00" {
		t.Fatalf("alice got %v, want the system's notice", ev)
	}
}

func TestBackendAPIRefusesWeakConfiguration(t *testing.T) {
	for name, tokens := range map[string][]edge.BackendToken{
		"no token":            nil,
		"a short token":       {{Name: "app", Token: "short"}},
		"no name":             {{Token: backendToken}},
		"a name with a space": {{Name: "my app", Token: backendToken}},
		"a name twice":        {{Name: "app", Token: backendToken}, {Name: "app", Token: backendToken + "2"}},
	} {
		_, err := platform.Start(context.Background(), platform.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", JWTSecret: secret,
			BackendAddr: "127.0.0.1:0", BackendTokens: tokens})
		if err == nil || !strings.Contains(err.Error(), "token") {
			t.Errorf("%s: Start = %v, want a refusal naming the token", name, err)
		}
		if errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}

// TestBackendAPIRateLimitsEachService: a service past its rate is
// refused with RESOURCE_EXHAUSTED, RATE_LIMITED and a RetryInfo, before
// anything it asked for happens; another service's bucket is its own.
func TestBackendAPIRateLimitsEachService(t *testing.T) {
	other := backendToken + "-other"
	e, stop := startWith(t, platform.Config{DataDir: t.TempDir(), BackendAddr: "127.0.0.1:0",
		BackendTokens: []edge.BackendToken{{Name: "test-app", Token: backendToken}, {Name: "other-app", Token: other}},
		BackendRate:   edge.Rate{Events: 1, Per: time.Minute, Burst: 2}})
	defer stop()
	cc, err := grpc.NewClient(e.p.Edge.BackendAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := backendv1.NewBackendServiceClient(cc)
	ctx := tctx(t)
	create := func(token, id string) error {
		_, err := api.CreateConversation(withToken(ctx, token), &backendv1.CreateConversationRequest{CreatorId: "bot", ConversationId: id,
			Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "room", ClientMsgId: id})
		return err
	}
	rooms := []string{uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()}
	for _, id := range rooms[:2] {
		if err := create(backendToken, id); err != nil {
			t.Fatalf("a call within the burst: %v", err)
		}
	}
	err = create(backendToken, rooms[2])
	if status.Code(err) != codes.ResourceExhausted || parleyCode(err) != "ERROR_CODE_RATE_LIMITED" {
		t.Fatalf("the third call in a minute = %v, want RESOURCE_EXHAUSTED with RATE_LIMITED", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if after := retry.GetRetryDelay().AsDuration(); after < 20*time.Second || after > time.Minute {
		t.Fatalf("retry after %v, want the bucket's next token, a minute away at most", after)
	}
	// The refused creation did not happen; the other service is let through.
	if _, err := api.GetHistory(withToken(ctx, other), &backendv1.GetHistoryRequest{AsUserId: "bot", ConversationId: rooms[2]}); status.Code(err) != codes.NotFound {
		t.Fatalf("history of the refused room = %v, want NOT_FOUND", err)
	}
	if err := create(other, rooms[2]); err != nil {
		t.Fatalf("another service's call: %v", err)
	}
	if page := e.metricsPage(t); !strings.Contains(page, "parley_backend_rate_limited_total 1\n") {
		t.Errorf("rate-limited calls counted: %s", grepLines(page, "parley_backend_rate_limited"))
	}
}

// TestWebChatShowsSystemNotices: a message the application posts as
// itself through the backend API shows on the page as a notice line,
// not as someone's message.
func TestWebChatShowsSystemNotices(t *testing.T) {
	w := startWebWith(t, 3*time.Minute, platform.Config{BackendAddr: "127.0.0.1:0",
		BackendTokens: []edge.BackendToken{{Name: "test-app", Token: backendToken}}})
	cc, err := grpc.NewClient(w.p.Edge.BackendAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := backendv1.NewBackendServiceClient(cc)
	ctx := withToken(w.ctx, backendToken)
	created, err := api.CreateConversation(ctx, &backendv1.CreateConversationRequest{CreatorId: "alice",
		Kind: chatv1.ConversationKind_CONVERSATION_KIND_GROUP, Title: "ops", MemberIds: []string{"bob"}, ClientMsgId: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	alice := w.tab("alice")
	w.openConv(alice, "alice", "ops")
	if _, err := api.SendMessage(ctx, &backendv1.SendMessageRequest{AsSystem: true, ConversationId: created.GetConversationId(),
		ClientMsgId: "n1", Text: "maintenance at 22:00"}); err != nil {
		t.Fatal(err)
	}
	w.waitHas(alice, "alice", `Array.from(document.querySelectorAll('#messages .system.notice')).map(n => n.textContent).join('|')`, "maintenance at 22:00")
	if got := w.str(alice, `M('maintenance') ? 'a message line' : 'none'`); got != "none" {
		t.Fatalf("the notice is also %s", got)
	}
}
