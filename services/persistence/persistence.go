// Package persistence keeps the read views of the event log (history,
// conversation lists, members) in a history.Store and serves them over
// gRPC.
package persistence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/parleychat/parley/pkg/server/consumer"
	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/records"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/tracing"
	"github.com/parleychat/parley/services/persistence/history"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	persistencev1 "github.com/parleychat/parley/pkg/pb/parley/persistence/v1"
)

// Group is the consumer group of persistence nodes.
const Group = "parley-persistence"

// Config configures the service.
type Config struct {
	Brokers []string
	// Kafka are the TLS and SASL options every Kafka client of the service
	// adds to the seed brokers (kafkaconf.Config.Opts); none for plaintext.
	Kafka []kgo.Opt
	// TLS, when set, is the internal mTLS: the gRPC server requires a
	// client certificate from its CA.
	TLS *mtls.Source
	// Registry holds the service's metrics; the caller makes it
	// (metrics.NewRegistry) and may serve it too. Required.
	Registry *prometheus.Registry
	GRPCAddr string
	// InstanceID, when set, makes this node a static group member: a
	// restart with the same id takes its partitions back at once instead of
	// waiting out the session timeout of its dead predecessor.
	InstanceID string
	// SyncMargin is how far back a conversation-list sync token reaches
	// (see syncMargin); one minute if zero.
	SyncMargin time.Duration
	// CommitEvery is how often the consumer commits its offsets
	// (consumer.Loop.CommitEvery): consumer.DefaultCommitEvery if zero,
	// after every batch if negative.
	CommitEvery time.Duration
	// StartupTimeout bounds Run's wait for Kafka to answer, after which
	// Run fails naming the brokers (topics.StartupTimeout if 0).
	StartupTimeout time.Duration
	Logger         *slog.Logger
	// TracerProvider makes the service's spans (its gRPC calls, each
	// applied batch); nil makes none.
	TracerProvider trace.TracerProvider
}

// Service is a running persistence node.
type Service struct {
	persistencev1.UnimplementedPersistenceServiceServer
	cfg   Config
	log   *slog.Logger
	store history.Store
	cl    *kgo.Client
	lis   net.Listener
	grpc  *grpc.Server
	Probe health.Probe

	guard   *records.SeqGuard
	reg     *prometheus.Registry
	counts  *metrics.EventConsumer
	metrics *metrics.Service
	// persisted and perApply are metrics' stage and batch size.
	persisted, perApply prometheus.Observer
	// tracer makes batch spans when traced (TracerProvider set).
	tracer trace.Tracer
	traced bool
}

// New binds the listener and joins nothing yet. The store stays the
// caller's to close.
func New(cfg Config, store history.Store) (*Service, error) {
	if cfg.Registry == nil {
		return nil, errors.New("persistence: Config.Registry is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	reg := cfg.Registry
	m := metrics.ForService(reg, "persistence")
	guard := &records.SeqGuard{}
	cl, err := kgo.NewClient(append(topics.ClientOpts(cfg.Brokers, cfg.Kafka...), topics.GroupOpts(Group, cfg.InstanceID, append(guard.Opts(func(ps map[string][]int32) { m.Lag.Forget(Group, ps) }),
		kgo.ConsumeTopics(topics.Events),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		m.Kafka("consumer"),
	)...)...)...)
	if err != nil {
		return nil, fmt.Errorf("persistence kafka client: %w", err)
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("persistence: grpc address: %w", err)
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("service", "persistence"), store: store, cl: cl, lis: lis, grpc: grpc.NewServer(append(append(m.GRPCServer(), tracing.GRPCServer(cfg.TracerProvider)...), mtls.ServerOption(cfg.TLS))...),
		metrics: m, persisted: m.Stage(metrics.StagePersisted), perApply: m.BatchSize(metrics.BatchEventsPerApply),
		tracer: tracing.Tracer(cfg.TracerProvider), traced: cfg.TracerProvider != nil,
		guard: guard, reg: reg, counts: metrics.NewEventConsumer(reg, "persistence",
			"Event records set aside on "+topics.DeadLetter+" instead of applied, by reason.", records.ReasonUndecodable, records.ReasonEmpty, records.ReasonInvalid)}
	persistencev1.RegisterPersistenceServiceServer(s.grpc, s)
	return s, nil
}

// Addr is the bound gRPC address.
func (s *Service) Addr() string { return s.lis.Addr().String() }

// Close releases what New opened (not the store, which is the caller's),
// for a service whose Run is never called (Run releases it otherwise): a
// process that fails to start the parts after this one.
func (s *Service) Close() {
	s.lis.Close()
	s.cl.Close()
}

// Run consumes and serves until ctx ends. Shutdown: readiness off, stop
// serving reads, finish the batch in hand and commit, leave the group.
func (s *Service) Run(ctx context.Context) error {
	defer s.cl.Close()
	if err := topics.WaitReadyWithin(ctx, s.cl, s.cfg.StartupTimeout); err != nil {
		s.lis.Close()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("persistence: %w", err)
	}
	s.Probe.NeedKafka(ctx, s.cl)
	s.Probe.NeedGroup("consumer group", func() *kgo.Client { return s.cl })
	if p, ok := s.store.(interface{ Ping(context.Context) error }); ok {
		s.Probe.Need("history store", health.Ping(ctx, health.PingEvery, p.Ping).Err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("persistence grpc serve: %w", err)
		}
		return nil
	})
	g.Go(func() error { return s.consume(gctx) })
	s.Probe.SetReady(true)
	s.log.Info("persistence ready", "grpc", s.Addr())
	<-gctx.Done()
	s.Probe.SetReady(false)
	s.grpc.GracefulStop()
	return g.Wait()
}

func (s *Service) consume(ctx context.Context) error {
	loop := consumer.Loop{Name: Group, Source: s.cl, MaxRecords: 1000, Log: s.log, Lag: s.metrics.Lag, Live: s.Probe.Watch("consumer", consumer.Stall),
		Handle: func(ctx context.Context, fetches kgo.Fetches) (bool, error) {
			// false: shutting down; the batch is read again by whoever
			// owns the partition next.
			return s.handle(ctx, fetches.Records()), nil
		},
		Commit:      s.cl.CommitUncommittedOffsets,
		CommitEvery: consumer.CommitPeriod(s.cfg.CommitEvery),
	}
	return loop.Run(ctx)
}

// handle dead-letters what cannot be stored and stores the rest; once it
// returns true the batch may be committed. It returns false only when ctx
// ended first.
func (s *Service) handle(ctx context.Context, recs []*kgo.Record) bool {
	if s.traced {
		// A root linked to each record's decision, as fan-out's batch.
		var span trace.Span
		ctx, span = s.tracer.Start(ctx, "persistence.batch", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithLinks(tracing.Links(recs)...),
			trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("messaging.destination.name", topics.Events),
				attribute.Int("parley.records", len(recs))))
		defer span.End()
	}
	records, ok := records.Triage(ctx, s.cl, s.log, Group, recs, s.guard, s.counts)
	if !ok {
		return false
	}
	if !storeBatch(ctx, s.store, s.log, records) {
		return false
	}
	if len(records) > 0 {
		s.perApply.Observe(float64(len(records)))
		now := time.Now()
		for _, r := range records {
			if ev := r.GetEvent(); ev != nil {
				metrics.ObserveStage(s.persisted, ev.GetTime().AsTime(), now)
			}
		}
	}
	return true
}

// storeBatch applies one batch of records to store. A store outage must
// not skip records: it retries the same batch until it lands (true) or ctx
// ends (false). The log holds the truth meanwhile. The stores' errors do
// not tell a refused record from an outage, so a record a store refuses
// would block its partition: records missing what every store needs are
// dead-lettered before they get here (records.Triage).
func storeBatch(ctx context.Context, store history.Store, log *slog.Logger, records []*logv1.EventRecord) bool {
	for backoff := 100 * time.Millisecond; len(records) > 0; backoff = min(2*backoff, 5*time.Second) {
		err := store.Apply(ctx, records)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		trace.SpanFromContext(ctx).AddEvent("store write failed", trace.WithAttributes(attribute.String("error", err.Error())))
		log.ErrorContext(ctx, "persistence: store write failed; retrying", "records", len(records), "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
	}
	return true
}

// History implements PersistenceService.
func (s *Service) History(ctx context.Context, req *persistencev1.HistoryRequest) (*persistencev1.HistoryResponse, error) {
	sum, err := s.authorize(ctx, req.GetConversationId(), req.GetUserId())
	if err != nil {
		return nil, err
	}
	page, err := s.store.History(ctx, req.GetConversationId(), history.Query{
		Forward: req.AfterSeq != nil, AfterSeq: req.GetAfterSeq(), BeforeSeq: req.GetBeforeSeq(), Limit: int(req.GetLimit()),
		Viewer: req.GetUserId(), LastSeq: sum.GetLastSeq(),
	})
	if err != nil {
		return nil, storeErr(err)
	}
	return &persistencev1.HistoryResponse{Events: page.Events, HasMore: page.HasMore}, nil
}

// maxCatchUpCursors bounds one CatchUp, as the edge bounds a resume.
const maxCatchUpCursors = 1000

// CatchUp implements PersistenceService: History's first forward page for
// each cursor, in one call.
func (s *Service) CatchUp(ctx context.Context, req *persistencev1.CatchUpRequest) (*persistencev1.CatchUpResponse, error) {
	if n := len(req.GetCursors()); n > maxCatchUpCursors {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d cursors, got %d", maxCatchUpCursors, n)
	}
	resp := &persistencev1.CatchUpResponse{Pages: make([]*persistencev1.CatchUpPage, 0, len(req.GetCursors()))}
	for _, cur := range req.GetCursors() {
		page := &persistencev1.CatchUpPage{ConversationId: cur.GetConversationId()}
		reader := req.GetUserId()
		if cur.GetReaderId() != "" {
			reader = cur.GetReaderId()
		}
		h, err := s.History(ctx, &persistencev1.HistoryRequest{
			UserId: reader, ConversationId: cur.GetConversationId(), AfterSeq: proto.Uint64(cur.GetAfterSeq()), Limit: req.GetLimit(),
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, status.FromContextError(ctx.Err()).Err()
			}
			st := status.Convert(err)
			page.ErrorCode, page.ErrorMessage = uint32(st.Code()), st.Message()
		} else {
			page.Events, page.HasMore = h.GetEvents(), h.GetHasMore()
		}
		resp.Pages = append(resp.Pages, page)
	}
	return resp, nil
}

// authorize returns the conversation's summary if user is a member. A
// non-member gets the answer of a conversation that does not exist
// (errNoSuchConversation): telling them apart would say, of a direct
// conversation, whose id anyone can derive from the pair, who talks to
// whom.
func (s *Service) authorize(ctx context.Context, conv, user string) (*chatv1.Conversation, error) {
	if conv == "" || user == "" {
		return nil, status.Error(codes.InvalidArgument, "conversation_id and user_id are required")
	}
	sum, err := s.store.Conversation(ctx, conv)
	if err != nil {
		return nil, storeErr(err)
	}
	if !history.IsMember(sum, user) {
		return nil, errNoSuchConversation
	}
	return sum, nil
}

// Conversations implements PersistenceService.
func (s *Service) Conversations(ctx context.Context, req *persistencev1.ConversationsRequest) (*persistencev1.ConversationsResponse, error) {
	if req.GetUserId() == "" {
		return nil, status.Error(codes.InvalidArgument, "user_id is required")
	}
	since, err := parseSyncToken(req.GetChangedSince())
	if err != nil {
		return nil, invalidToken(err)
	}
	// The token is taken before the read, so a change landing during the
	// read shows again next time rather than never.
	tok := syncToken(time.Now(), s.cfg.SyncMargin)
	list, err := s.store.Conversations(ctx, req.GetUserId(), history.ListQuery{Limit: int(req.GetLimit()), ChangedSince: since})
	if err != nil {
		return nil, storeErr(err)
	}
	return &persistencev1.ConversationsResponse{Conversations: list, SyncToken: tok}, nil
}

// errNoSuchConversation answers a conversation that does not exist, or
// that the caller is not in.
var errNoSuchConversation = status.Error(codes.NotFound, "no such conversation")

func storeErr(err error) error {
	switch {
	case errors.Is(err, history.ErrNotFound):
		return errNoSuchConversation
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Unavailable, "history store: %v", err)
}
