package edge

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/mtls"

	backendv1 "github.com/parleychat/parley/pkg/pb/parley/backend/v1"
	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// The backend API (parley.backend.v1.BackendService) is how an
// application's own servers act for their users: the edge is already the
// door from outside, holds the clients of ingest and persistence, and
// turns requests into commands. It listens on an address of its own, so a
// network policy can open it to the application's servers alone, and
// refuses every call (reflection included) that lacks a service token.

// MinBackendTokenLen is the shortest service token accepted: a guessable
// one would open every user's conversations.
const MinBackendTokenLen = 32

// BackendToken is a service credential: Name says in logs which
// application called, Token is what it presents as
// "authorization: Bearer TOKEN".
type BackendToken struct {
	Name, Token string
}

// LoadBackendTokens reads a token file: one "NAME TOKEN" per line, blank
// lines and lines starting with # skipped. A Kubernetes Secret mounted as
// a file is the intended source.
func LoadBackendTokens(path string) ([]BackendToken, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backend tokens: %w", err)
	}
	defer f.Close()
	var out []BackendToken
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("backend tokens: %s:%d: want NAME TOKEN", path, n)
		}
		out = append(out, BackendToken{Name: fields[0], Token: fields[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("backend tokens: %w", err)
	}
	return out, nil
}

// backendKey is a token as the edge keeps it: its digest, compared in
// constant time, never the token itself.
type backendKey struct {
	name string
	sum  [sha256.Size]byte
}

func backendKeys(tokens []BackendToken) ([]backendKey, error) {
	if len(tokens) == 0 {
		return nil, errors.New("the backend API needs at least one service token")
	}
	seen := map[string]bool{}
	keys := make([]backendKey, 0, len(tokens))
	for _, t := range tokens {
		switch {
		case !auth.ValidUserID(t.Name):
			// The name goes into the device id of what the service sends.
			return nil, fmt.Errorf("backend token %q: a name is 1-64 of A-Z a-z 0-9 . _ @ -", t.Name)
		case seen[t.Name]:
			return nil, fmt.Errorf("backend token %q: named twice", t.Name)
		case len(t.Token) < MinBackendTokenLen:
			return nil, fmt.Errorf("backend token %q: shorter than %d bytes", t.Name, MinBackendTokenLen)
		}
		seen[t.Name] = true
		keys = append(keys, backendKey{name: t.Name, sum: sha256.Sum256([]byte(t.Token))})
	}
	return keys, nil
}

// DefaultBackendRate bounds each service token's backend API calls: far
// above what an application's servers send in the normal way of things,
// low enough that a runaway job cannot flood the sequencer.
var DefaultBackendRate = Rate{Events: 1000, Per: time.Second, Burst: 2000}

// backendCaller is the context key of the authenticated service's name.
type backendCaller struct{}

// callerOf is the authenticated service's name ("" before authenticate).
func callerOf(ctx context.Context) string {
	name, _ := ctx.Value(backendCaller{}).(string)
	return name
}

// backendAPI implements BackendService.
type backendAPI struct {
	backendv1.UnimplementedBackendServiceServer
	svc  *Service
	keys []backendKey
	// refused counts calls refused for their credentials; refusals are
	// logged at most every 10 s, so a caller without a token cannot
	// flood the log.
	refused    prometheus.Counter
	refusedLog rate.Sometimes
	// limits holds each service's token bucket (Config.BackendRate),
	// made at start for the fixed set of tokens; nil when the limit is
	// off. limited counts the calls it refused.
	limits  map[string]*rate.Limiter
	limited prometheus.Counter
}

// listenBackend binds the backend API's listener and builds its server, or
// does nothing when no address is configured.
func (s *Service) listenBackend(cfg Config, serverOpts []grpc.ServerOption) error {
	if cfg.BackendAddr == "" {
		return nil
	}
	keys, err := backendKeys(cfg.BackendTokens)
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	if s.srv.backendLis, err = net.Listen("tcp", cfg.BackendAddr); err != nil {
		return fmt.Errorf("edge: backend address: %w", err)
	}
	b := &backendAPI{svc: s, keys: keys, refusedLog: rate.Sometimes{Interval: 10 * time.Second},
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_backend_refused_total",
			Help: "Backend API calls refused for a missing or wrong service token."})}
	b.limited = prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_backend_rate_limited_total",
		Help: "Backend API calls refused for their service's rate (-backend-rate)."})
	cfg.Registry.MustRegister(b.refused, b.limited)
	r := cfg.BackendRate
	if r == (Rate{}) {
		r = DefaultBackendRate
	}
	if !r.Off {
		b.limits = map[string]*rate.Limiter{}
		for _, k := range keys {
			b.limits[k.name] = rate.NewLimiter(rate.Limit(r.Events/r.Per.Seconds()), r.Burst)
		}
	}
	opts := append(append([]grpc.ServerOption{}, serverOpts...),
		grpc.ChainUnaryInterceptor(b.unaryAuth), grpc.ChainStreamInterceptor(b.streamAuth),
		// With internal mTLS on, the backend API takes TLS too and asks
		// for a client certificate from the same CA, besides the token.
		mtls.ServerOption(cfg.TLS))
	s.srv.backend = grpc.NewServer(opts...)
	backendv1.RegisterBackendServiceServer(s.srv.backend, b)
	reflection.Register(s.srv.backend)
	return nil
}

// BackendAddr is the bound backend API address, empty when it is off.
func (s *Service) BackendAddr() string {
	if s.srv.backendLis == nil {
		return ""
	}
	return s.srv.backendLis.Addr().String()
}

// authenticate finds the service the call's bearer token belongs to.
func (b *backendAPI) authenticate(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return nil, status.Error(codes.Unauthenticated, "a service token is required: authorization: Bearer TOKEN")
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return nil, status.Error(codes.Unauthenticated, "authorization must be Bearer TOKEN")
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	name := ""
	for _, k := range b.keys {
		// Every key is compared, so the time taken says nothing about
		// which one matched.
		if subtle.ConstantTimeCompare(sum[:], k.sum[:]) == 1 {
			name = k.name
		}
	}
	if name == "" {
		return nil, status.Error(codes.Unauthenticated, "invalid service token")
	}
	return context.WithValue(ctx, backendCaller{}, name), nil
}

func (b *backendAPI) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	actx, err := b.authenticate(ctx)
	if err != nil {
		b.refuse(info.FullMethod, err)
		return nil, err
	}
	if err := b.admit(actx); err != nil {
		return nil, err
	}
	return handler(actx, req)
}

func (b *backendAPI) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	actx, err := b.authenticate(ss.Context())
	if err != nil {
		b.refuse(info.FullMethod, err)
		return err
	}
	if err := b.admit(actx); err != nil {
		return err
	}
	return handler(srv, ss)
}

// admit takes a token from the calling service's bucket, or refuses the
// call with RESOURCE_EXHAUSTED, ERROR_CODE_RATE_LIMITED and a RetryInfo
// saying when the next call would be let through: one runaway job of the
// application cannot take the chat down for everyone.
func (b *backendAPI) admit(ctx context.Context) error {
	lim := b.limits[callerOf(ctx)]
	if lim == nil {
		return nil
	}
	r := lim.Reserve()
	after := r.Delay()
	if after == 0 {
		return nil
	}
	r.Cancel()
	b.limited.Inc()
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("this service's rate of backend calls is used up; retry in %s", after.Round(time.Millisecond)))
	if d, err := st.WithDetails(
		&errdetails.ErrorInfo{Reason: chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED.String(), Domain: "parley.chat.v1"},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(after)},
	); err == nil {
		st = d
	}
	return st.Err()
}

func (b *backendAPI) refuse(method string, err error) {
	b.refused.Inc()
	b.refusedLog.Do(func() {
		b.svc.log.Warn("edge: backend call refused (logged at most every 10 s; parley_backend_refused_total counts them)", "method", method, "err", err)
	})
}

// submit runs a command as user, from a device named after the calling
// service, and turns a refusal into a gRPC error carrying the Parley code.
func (b *backendAPI) submit(ctx context.Context, user string, cmd *logv1.Command) (*logv1.Outcome, error) {
	if user == "" {
		return nil, backendError(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the acting user id is required")
	}
	if cmd.GetClientMsgId() == "" {
		// A retry without one would act twice.
		return nil, backendError(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "client_msg_id is required")
	}
	cmd.UserId, cmd.DeviceId = user, "backend:"+callerOf(ctx)
	resp, err := b.svc.clients.ingest.Submit(ctx, &ingestv1.SubmitRequest{Command: cmd})
	if err != nil {
		code, msg := grpcError(err)
		if code == chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE {
			msg += "; retry with the same client_msg_id"
		}
		return nil, backendError(code, msg)
	}
	o := resp.GetOutcome()
	if c := o.GetErrorCode(); c != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return nil, backendError(c, o.GetErrorMessage())
	}
	return o, nil
}

// SendMessage implements BackendService.
func (b *backendAPI) SendMessage(ctx context.Context, req *backendv1.SendMessageRequest) (*backendv1.SendMessageResponse, error) {
	sender := req.GetSenderId()
	if req.GetAsSystem() && sender == "" {
		sender = "system"
	}
	o, err := b.submit(ctx, sender, &logv1.Command{
		ConversationId: req.GetConversationId(), ClientMsgId: req.GetClientMsgId(),
		Body: &logv1.Command_PostMessage{PostMessage: &logv1.PostMessage{
			Text: req.GetText(), MentionIds: req.GetMentionIds(), ReplyToSeq: req.GetReplyToSeq(), System: req.GetAsSystem(),
		}},
	})
	if err != nil {
		return nil, err
	}
	return &backendv1.SendMessageResponse{Seq: o.GetSeq(), Duplicate: o.GetDuplicate()}, nil
}

// Broadcast implements BackendService: a system notice to the audience
// of key=value, posted as the calling service.
func (b *backendAPI) Broadcast(ctx context.Context, req *backendv1.BroadcastRequest) (*backendv1.BroadcastResponse, error) {
	sel, err := auth.Selector(req.GetKey(), req.GetValue())
	if err != nil {
		return nil, backendError(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, err.Error())
	}
	o, err := b.submit(ctx, "system", &logv1.Command{ClientMsgId: req.GetClientMsgId(),
		Body: &logv1.Command_Announce{Announce: &logv1.Announce{Selector: sel, Text: req.GetText()}}})
	if err != nil {
		return nil, err
	}
	return &backendv1.BroadcastResponse{ConversationId: o.GetConversationId(), Seq: o.GetSeq(), Duplicate: o.GetDuplicate()}, nil
}

// SendNotice implements BackendService: a system notice to one user's
// inbox, posted as the calling service.
func (b *backendAPI) SendNotice(ctx context.Context, req *backendv1.SendNoticeRequest) (*backendv1.SendNoticeResponse, error) {
	o, err := b.submit(ctx, "system", &logv1.Command{ClientMsgId: req.GetClientMsgId(),
		Body: &logv1.Command_Notice{Notice: &logv1.Notice{OwnerId: req.GetUserId(), Text: req.GetText()}}})
	if err != nil {
		return nil, err
	}
	return &backendv1.SendNoticeResponse{ConversationId: o.GetConversationId(), Seq: o.GetSeq(), Duplicate: o.GetDuplicate()}, nil
}

// CreateConversation implements BackendService.
func (b *backendAPI) CreateConversation(ctx context.Context, req *backendv1.CreateConversationRequest) (*backendv1.CreateConversationResponse, error) {
	o, err := b.submit(ctx, req.GetCreatorId(), &logv1.Command{
		ConversationId: req.GetConversationId(), ClientMsgId: req.GetClientMsgId(),
		Body: &logv1.Command_CreateConversation{CreateConversation: &logv1.CreateConversation{
			Kind: req.GetKind(), Title: req.GetTitle(), MemberIds: req.GetMemberIds(), Public: req.GetPublic(),
		}},
	})
	if err != nil {
		return nil, err
	}
	return &backendv1.CreateConversationResponse{ConversationId: o.GetConversationId(), Seq: o.GetSeq(), Duplicate: o.GetDuplicate()}, nil
}

// AddMember implements BackendService.
func (b *backendAPI) AddMember(ctx context.Context, req *backendv1.AddMemberRequest) (*backendv1.AddMemberResponse, error) {
	o, err := b.submit(ctx, req.GetActorId(), &logv1.Command{
		ConversationId: req.GetConversationId(), ClientMsgId: req.GetClientMsgId(),
		Body: &logv1.Command_AddMember{AddMember: &logv1.AddMember{UserId: req.GetUserId()}},
	})
	if err != nil {
		return nil, err
	}
	return &backendv1.AddMemberResponse{Seq: o.GetSeq(), Duplicate: o.GetDuplicate()}, nil
}

// RemoveMember implements BackendService.
func (b *backendAPI) RemoveMember(ctx context.Context, req *backendv1.RemoveMemberRequest) (*backendv1.RemoveMemberResponse, error) {
	o, err := b.submit(ctx, req.GetActorId(), &logv1.Command{
		ConversationId: req.GetConversationId(), ClientMsgId: req.GetClientMsgId(),
		Body: &logv1.Command_RemoveMember{RemoveMember: &logv1.RemoveMember{UserId: req.GetUserId()}},
	})
	if err != nil {
		return nil, err
	}
	return &backendv1.RemoveMemberResponse{Seq: o.GetSeq(), Duplicate: o.GetDuplicate()}, nil
}

// GetHistory implements BackendService; persistence checks membership.
func (b *backendAPI) GetHistory(ctx context.Context, req *backendv1.GetHistoryRequest) (*backendv1.GetHistoryResponse, error) {
	if !auth.ValidUserID(req.GetAsUserId()) || req.GetConversationId() == "" {
		return nil, backendError(chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "a valid as_user_id and a conversation_id are required")
	}
	resp, err := b.svc.clients.persistence.History(ctx, &persistencev1.HistoryRequest{
		UserId: req.GetAsUserId(), ConversationId: req.GetConversationId(),
		BeforeSeq: req.GetBeforeSeq(), AfterSeq: req.AfterSeq, Limit: req.GetLimit(),
	})
	if err != nil {
		code, msg := grpcError(err)
		return nil, backendError(code, msg)
	}
	return &backendv1.GetHistoryResponse{Events: resp.GetEvents(), HasMore: resp.GetHasMore()}, nil
}

// backendError is a refusal as a gRPC status: the code a gRPC client
// branches on, and the Parley code (as a client would get it) in an
// ErrorInfo detail.
func backendError(code chatv1.ErrorCode, msg string) error {
	st := status.New(backendCode(code), msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: code.String(), Domain: "parley.chat.v1"}); err == nil {
		st = d
	}
	return st.Err()
}

// backendCode maps Parley's error codes to gRPC's.
func backendCode(c chatv1.ErrorCode) codes.Code {
	switch c {
	case chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, chatv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, chatv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE:
		return codes.InvalidArgument
	case chatv1.ErrorCode_ERROR_CODE_NOT_MEMBER, chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED,
		chatv1.ErrorCode_ERROR_CODE_MUTED, chatv1.ErrorCode_ERROR_CODE_BLOCKED:
		return codes.PermissionDenied
	case chatv1.ErrorCode_ERROR_CODE_NOT_FOUND, chatv1.ErrorCode_ERROR_CODE_MESSAGE_NOT_FOUND:
		return codes.NotFound
	case chatv1.ErrorCode_ERROR_CODE_ALREADY_EXISTS:
		return codes.AlreadyExists
	case chatv1.ErrorCode_ERROR_CODE_MESSAGE_DELETED:
		return codes.FailedPrecondition
	case chatv1.ErrorCode_ERROR_CODE_CONVERSATION_FULL, chatv1.ErrorCode_ERROR_CODE_RATE_LIMITED:
		return codes.ResourceExhausted
	case chatv1.ErrorCode_ERROR_CODE_UNAVAILABLE:
		return codes.Unavailable
	case chatv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, chatv1.ErrorCode_ERROR_CODE_TOKEN_EXPIRED:
		return codes.Unauthenticated
	}
	return codes.Internal
}
