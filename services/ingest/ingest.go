// Package ingest is the write side: it validates commands, appends them to
// parley.commands.v1 and answers Submit with the sequencer's outcome. The
// sequencer stage (sequencer.go) runs in the same service and hands the
// outcomes of this process's Submits straight to them once its transaction
// commits; outcomes for other processes go through parley.outcomes.v1.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/consumer"
	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/tracing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	ingestv1 "github.com/parleychat/parley/pkg/pb/parley/ingest/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
)

// Limits on command content. Text is bounded well under the frame limit.
const (
	MaxTextBytes    = 16 << 10
	MaxTitleBytes   = 256
	MaxClientMsgID  = 128
	DefaultMembers  = 1000
	defaultTimeout  = 10 * time.Second
	shutdownTimeout = 10 * time.Second
)

// Config configures the service.
type Config struct {
	Brokers []string
	// Kafka are the TLS and SASL options every Kafka client of the service
	// adds to the seed brokers (kafkaconf.Config.Opts); none for plaintext.
	Kafka []kgo.Opt
	// TLS, when set, is the internal mTLS: the gRPC server requires a
	// client certificate from its CA, and the clients present one.
	TLS *mtls.Source
	// Registry holds the service's metrics; the caller makes it
	// (metrics.NewRegistry) and may serve it too. Required.
	Registry *prometheus.Registry
	// GRPCAddr is where IngestService listens (host:port, port 0 for any).
	GRPCAddr string
	// SubmitTimeout bounds the wait for the sequencer's outcome.
	SubmitTimeout time.Duration
	// MaxMembers bounds a conversation's size.
	MaxMembers int
	// InstanceID, when set, makes the sequencer a static group member (see
	// topics.GroupOpts).
	InstanceID string
	// BatchWindow is how long the sequencer keeps collecting commands
	// after the first of a batch before deciding them in one transaction
	// (consumer.Loop.Gather): consumer.DefaultBatchWindow if zero; negative
	// decides what each poll brings.
	BatchWindow time.Duration
	// CommandLinger is how long the first command of a produce request
	// waits for others (franz-go's ProducerLinger): the Submits that arrive
	// meanwhile share one request to the broker instead of paying one
	// each. 0 sends each at once.
	CommandLinger time.Duration
	// StartupTimeout bounds Run's wait for Kafka to answer, after which
	// Run fails naming the brokers (topics.StartupTimeout if 0).
	StartupTimeout time.Duration
	Logger         *slog.Logger
	// TracerProvider makes the service's spans (Submit, the command's
	// append, the sequencer's batches and decisions); nil makes none.
	TracerProvider trace.TracerProvider
}

// Service is a running ingest node.
type Service struct {
	ingestv1.UnimplementedIngestServiceServer
	cfg      Config
	log      *slog.Logger
	lis      net.Listener
	grpc     *grpc.Server
	producer *kgo.Client
	seq      *Sequencer
	reg      *prometheus.Registry
	metrics  *metrics.Service
	tracer   trace.Tracer
	Probe    health.Probe

	// replyTo is this process's Command.reply_to: the sequencer beside
	// Submit answers the commands that carry it without an outcome record.
	replyTo string
	// mu guards waiters: Submit adds; the sequencer of this process and
	// the outcome reader (for commands decided elsewhere) resolve.
	mu      sync.Mutex
	waiters map[string]chan *logv1.Outcome
	// heads gathers Heads calls into probes; set once the commands topic's
	// partitions are known (start).
	heads atomic.Pointer[headBatcher]
	// stopping closes when Run starts shutting down: SubmitStream stops
	// reading, answers what it read, and ends its stream, which
	// GracefulStop would otherwise wait for.
	stopping chan struct{}
	streamed *prometheus.CounterVec
}

// New binds the gRPC listener and creates the Kafka clients.
func New(cfg Config) (*Service, error) {
	if cfg.Registry == nil {
		return nil, errors.New("ingest: Config.Registry is required")
	}
	if cfg.SubmitTimeout <= 0 {
		cfg.SubmitTimeout = defaultTimeout
	}
	if cfg.MaxMembers <= 0 {
		cfg.MaxMembers = DefaultMembers
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("service", "ingest")
	reg := cfg.Registry
	m := metrics.ForService(reg, "ingest")
	producer, err := kgo.NewClient(append(topics.ClientOpts(cfg.Brokers, cfg.Kafka...), m.Kafka("producer"), kgo.ProducerLinger(max(cfg.CommandLinger, 0)))...)
	if err != nil {
		return nil, fmt.Errorf("ingest kafka producer: %w", err)
	}
	seq, err := NewSequencer(topics.ClientOpts(cfg.Brokers, cfg.Kafka...), cfg.InstanceID, cfg.MaxMembers, log, newDeadLetters(reg), func() kgo.Opt { return m.Kafka("sequencer") })
	if err != nil {
		producer.Close()
		return nil, err
	}
	seq.measure(m)
	seq.hanging = newHangingTxns(reg)
	switch {
	case cfg.BatchWindow == 0:
		seq.gather = consumer.DefaultBatchWindow
	case cfg.BatchWindow > 0:
		seq.gather = cfg.BatchWindow
	}
	seq.tracer, seq.traced = tracing.Tracer(cfg.TracerProvider), cfg.TracerProvider != nil
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		seq.sess.Close()
		producer.Close()
		return nil, fmt.Errorf("ingest: grpc address: %w", err)
	}
	s := &Service{cfg: cfg, log: log, lis: lis, grpc: grpc.NewServer(append(append(m.GRPCServer(), tracing.GRPCServer(cfg.TracerProvider)...), mtls.ServerOption(cfg.TLS))...), producer: producer, seq: seq, reg: reg, metrics: m,
		tracer: tracing.Tracer(cfg.TracerProvider), waiters: map[string]chan *logv1.Outcome{}, replyTo: uuid.NewString(),
		stopping: make(chan struct{}), streamed: newStreamedSubmits(reg)}
	seq.self, seq.answer = s.replyTo, s.answer
	ingestv1.RegisterIngestServiceServer(s.grpc, s)
	return s, nil
}

// Addr is the bound gRPC address.
func (s *Service) Addr() string { return s.lis.Addr().String() }

// Close releases what New opened, for a service whose Run is never called
// (Run releases it otherwise): a process that fails to start the parts
// after this one.
func (s *Service) Close() {
	s.lis.Close()
	s.seq.sess.Close()
	s.producer.Close()
}

// Run serves until ctx ends, then shuts down in order: readiness off, stop
// taking Submits and let those in flight finish (they need the outcome
// reader), then stop the outcome reader and the sequencer, then close Kafka.
func (s *Service) Run(ctx context.Context) error {
	outcomes, err := s.start(ctx)
	if err != nil {
		s.Close()
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer s.producer.Close()
	defer outcomes.Close()
	loops, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()

	s.Probe.NeedKafka(ctx, s.producer)
	s.Probe.NeedGroup("sequencer group", s.seq.client)
	s.Probe.Need("sequencer", s.seq.rebuilding)
	s.seq.live = s.Probe.Watch("sequencer", consumer.Stall)
	g, gctx := errgroup.WithContext(loops)
	g.Go(func() error { return s.readOutcomes(gctx, outcomes) })
	g.Go(func() error { return s.seq.Run(gctx) })
	g.Go(func() error {
		if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("ingest grpc serve: %w", err)
		}
		return nil
	})
	s.Probe.SetReady(true)
	s.log.Info("ingest ready", "grpc", s.Addr())

	select {
	case <-ctx.Done():
	case <-gctx.Done():
	}
	s.Probe.SetReady(false)
	close(s.stopping)
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(shutdownTimeout):
		s.grpc.Stop()
	}
	stopLoops()
	return g.Wait()
}

// start waits for Kafka, then opens the outcome reader.
func (s *Service) start(ctx context.Context) (*kgo.Client, error) {
	if err := topics.WaitReadyWithin(ctx, s.producer, s.cfg.StartupTimeout); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	parts, err := kadm.NewClient(s.producer).ListEndOffsets(ctx, topics.Commands)
	if err != nil {
		return nil, fmt.Errorf("ingest: command partitions: %w", err)
	}
	n := 0
	parts.Each(func(kadm.ListedOffset) { n++ })
	if n == 0 {
		return nil, fmt.Errorf("ingest: topic %s has no partitions", topics.Commands)
	}
	s.heads.Store(newHeadBatcher(commandPartitioner(n), s.probeHeads, s.cfg.SubmitTimeout))
	return s.outcomeReader(ctx)
}

// outcomeReader starts reading outcomes at the current end of every
// partition, fixed before the first Submit so no outcome can slip past.
func (s *Service) outcomeReader(ctx context.Context) (*kgo.Client, error) {
	ends, err := kadm.NewClient(s.producer).ListEndOffsets(ctx, topics.Outcomes)
	if err != nil {
		return nil, fmt.Errorf("ingest: outcome end offsets: %w", err)
	}
	start := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			start[o.Partition] = kgo.NewOffset().At(o.Offset)
		}
	})
	if len(start) == 0 {
		return nil, fmt.Errorf("ingest: topic %s has no readable partitions", topics.Outcomes)
	}
	cl, err := kgo.NewClient(append(topics.ClientOpts(s.cfg.Brokers, s.cfg.Kafka...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topics.Outcomes: start}),
		kgo.FetchMaxWait(100*time.Millisecond),
		s.metrics.Kafka("outcomes"),
	)...)
	if err != nil {
		return nil, fmt.Errorf("ingest outcome reader: %w", err)
	}
	return cl, nil
}

func (s *Service) readOutcomes(ctx context.Context, cl *kgo.Client) error {
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			s.log.Warn("outcome fetch", "topic", t, "partition", p, "err", err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			if err := s.resolve(r.Value); err != nil {
				s.log.Error("undecodable outcome", "partition", r.Partition, "offset", r.Offset, "err", err)
			}
		})
	}
}

// resolve hands an outcome record to the Submit waiting for its command,
// if one is.
func (s *Service) resolve(value []byte) error {
	o := &logv1.Outcome{}
	if err := proto.Unmarshal(value, o); err != nil {
		return err
	}
	s.answer([]*logv1.Outcome{o})
	return nil
}

// answer hands each outcome to the Submit waiting for its command, if one
// is. Each waiter is removed as it is answered, so its one-slot channel
// never blocks the caller (the outcome reader, or the sequencer once a
// transaction has committed), whatever comes twice.
func (s *Service) answer(outcomes []*logv1.Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range outcomes {
		if ch := s.waiters[o.GetCommandId()]; ch != nil {
			delete(s.waiters, o.GetCommandId())
			ch <- o
		}
	}
}

// Submit implements IngestService.
func (s *Service) Submit(ctx context.Context, req *ingestv1.SubmitRequest) (*ingestv1.SubmitResponse, error) {
	// A caller in the same process (tests, parley run) may hold on to
	// the request: ingest fills in the command's ids on a copy.
	o, err := s.submit(ctx, proto.CloneOf(req.GetCommand()))
	if err != nil {
		return nil, err
	}
	return &ingestv1.SubmitResponse{Outcome: o}, nil
}

// submit is one Submit, unary or on a stream: the outcome, or the gRPC
// status error that leaves it unknown. It fills in cmd's ids, so cmd
// must be the caller's own.
func (s *Service) submit(ctx context.Context, cmd *logv1.Command) (*logv1.Outcome, error) {
	if cmd == nil {
		return nil, status.Error(codes.InvalidArgument, "command is required")
	}
	if code, msg := Prepare(cmd); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return &logv1.Outcome{
			ConversationId: cmd.GetConversationId(), ClientMsgId: cmd.GetClientMsgId(), ErrorCode: code, ErrorMessage: msg,
		}, nil
	}
	cmd.CommandId = uuid.Must(uuid.NewV7()).String()
	cmd.SubmitTime = timestamppb.Now()
	return s.appendAndWait(ctx, cmd)
}

// appendAndWait appends a prepared command, addressed to this process
// (reply_to), and waits, at most SubmitTimeout, for the sequencer's
// outcome.
func (s *Service) appendAndWait(ctx context.Context, cmd *logv1.Command) (*logv1.Outcome, error) {
	cmd.ReplyTo = s.replyTo
	value, err := proto.Marshal(cmd)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "marshal command: %v", err)
	}
	ch := make(chan *logv1.Outcome, 1)
	s.mu.Lock()
	s.waiters[cmd.CommandId] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiters, cmd.CommandId)
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SubmitTimeout)
	defer cancel()
	start := time.Now()
	trace.SpanFromContext(ctx).SetAttributes(attrCommandID.String(cmd.CommandId), attrConv.String(cmd.ConversationId))
	if err := s.append(ctx, cmd, value); err != nil {
		s.log.WarnContext(ctx, "ingest: command not appended", "command_id", cmd.CommandId, "conversation", cmd.ConversationId, "err", err)
		return nil, status.Errorf(codes.Unavailable, "append command: %v", err)
	}
	select {
	case o := <-ch:
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.DebugContext(ctx, "ingest: submitted", "command_id", cmd.CommandId, "conversation", cmd.ConversationId,
				"seq", o.GetSeq(), "duplicate", o.GetDuplicate(), "error_code", o.GetErrorCode().String(), "took", time.Since(start))
		}
		return o, nil
	case <-ctx.Done():
		// The command is in the log and will be sequenced; a retry with the
		// same client message id gets its outcome.
		s.log.WarnContext(ctx, "ingest: no outcome in time", "command_id", cmd.CommandId, "conversation", cmd.ConversationId, "err", ctx.Err())
		return nil, status.Errorf(codes.Unavailable, "waiting for the sequencer: %v", ctx.Err())
	}
}

// append produces the command to topics.Commands in a span of its own,
// whose context the record carries to the sequencer.
func (s *Service) append(ctx context.Context, cmd *logv1.Command, value []byte) error {
	ctx, span := s.tracer.Start(ctx, "ingest.append", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attrMessagingSystem, attrDestination.String(topics.Commands), attrCommandID.String(cmd.CommandId), attrConv.String(cmd.ConversationId)))
	defer span.End()
	rec := &kgo.Record{Topic: topics.Commands, Key: []byte(cmd.ConversationId), Value: value}
	tracing.Inject(ctx, rec)
	// Not ProduceSync, which skips the linger: with CommandLinger the
	// Submits in flight share requests.
	done := make(chan error, 1)
	s.producer.Produce(ctx, rec, func(_ *kgo.Record, err error) { done <- err })
	if err := <-done; err != nil {
		span.SetStatus(otelcodes.Error, err.Error())
		return err
	}
	span.SetAttributes(attrPartition.Int(int(rec.Partition)), attrOffset.Int64(rec.Offset))
	return nil
}

// NoSuchConversation is the one answer, with ERROR_CODE_NOT_FOUND, to a
// command naming a conversation that does not exist or that its user is
// not in.
const NoSuchConversation = "no such conversation"

// Invite codes are chosen by clients (the SDK draws 128 random bits), so
// they must be long enough not to be guessed.
const (
	MinInviteCode  = 16
	MaxInviteCode  = 64
	inviteCodeRule = "an invite code is 16-64 letters, digits, '-' or '_'"
)

// ValidInviteCode reports whether code has an invite code's shape.
func ValidInviteCode(code string) bool {
	if len(code) < MinInviteCode || len(code) > MaxInviteCode {
		return false
	}
	for _, r := range code {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// directNamespace derives direct conversation ids from the member pair.
var directNamespace = uuid.MustParse("6f0e5bb4-6a42-4a50-9d0c-8f7b4b7d9a11")

// DirectID is the id of the direct conversation between two users.
func DirectID(a, b string) string {
	if a > b {
		a, b = b, a
	}
	return uuid.NewSHA1(directNamespace, []byte(a+"\x00"+b)).String()
}

// Prepare validates a command's shape and fills what ingest derives
// (conversation ids, the creator's membership). It returns an error code
// and message when the command must be rejected without reaching the log.
func Prepare(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	invalid := chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
	if !auth.ValidUserID(cmd.GetUserId()) {
		return invalid, "invalid user id"
	}
	if len(cmd.GetDeviceId()) > MaxClientMsgID || !utf8.ValidString(cmd.GetDeviceId()) || strings.ContainsFunc(cmd.GetDeviceId(), unicode.IsControl) {
		return invalid, "invalid device id"
	}
	f := familyOf(cmd)
	if f == nil {
		return invalid, "command has no known body"
	}
	if f.internal {
		return chatv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "only Parley writes this command"
	}
	if f.state {
		// State, not history: no seq, so no client message id either.
		cmd.ClientMsgId = ""
		return f.prepare(cmd)
	}
	if n := len(cmd.GetClientMsgId()); n == 0 || n > MaxClientMsgID || !utf8.ValidString(cmd.GetClientMsgId()) {
		return invalid, fmt.Sprintf("client_msg_id must be 1-%d bytes of UTF-8", MaxClientMsgID)
	}
	if code, msg := f.prepare(cmd); code != chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return code, msg
	}
	return needConversation(cmd)
}

// needConversation refuses a command without a usable conversation id.
func needConversation(cmd *logv1.Command) (chatv1.ErrorCode, string) {
	if cmd.GetConversationId() == "" || len(cmd.GetConversationId()) > 64 {
		return chatv1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "conversation_id is required"
	}
	return chatv1.ErrorCode_ERROR_CODE_UNSPECIFIED, ""
}
