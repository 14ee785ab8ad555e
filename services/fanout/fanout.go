// Package fanout delivers each event of the log to the edges that hold its
// recipients' sessions: it locates recipients through presence, groups
// deliveries per edge and pushes them over gRPC.
package fanout

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sync/errgroup"
	"log/slog"
	"time"

	"github.com/parleychat/parley/pkg/server/consumer"
	"github.com/parleychat/parley/pkg/server/health"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/presenceclient"
	"github.com/parleychat/parley/pkg/server/push"
	"github.com/parleychat/parley/pkg/server/records"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/tracing"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	edgev1 "github.com/parleychat/parley/pkg/pb/parley/edge/v1"
	logv1 "github.com/parleychat/parley/pkg/pb/parley/log/v1"
	presencev1 "github.com/parleychat/parley/pkg/pb/parley/presence/v1"
)

// Group is the consumer group of fan-out nodes.
const Group = "parley-fanout"

// pushTimeout bounds one Push; a stuck edge must not stall every other.
const pushTimeout = 5 * time.Second

// Config configures the service.
type Config struct {
	Brokers []string
	// Kafka are the TLS and SASL options every Kafka client of the service
	// adds to the seed brokers (kafkaconf.Config.Opts); none for plaintext.
	Kafka []kgo.Opt
	// TLS, when set, is the internal mTLS its gRPC clients present and
	// check servers with.
	TLS *mtls.Source
	// Registry holds the service's metrics; the caller makes it
	// (metrics.NewRegistry) and may serve it too. Required.
	Registry *prometheus.Registry
	// PresenceAddrs are the presence instances, in instance order.
	PresenceAddrs []string
	// InstanceID, when set, makes this node a static group member: a
	// restart with the same id takes its partitions back at once instead of
	// waiting out the session timeout of its dead predecessor.
	InstanceID string
	// NoLocationCache makes every batch ask presence where its recipients
	// are, instead of answering from the leased cache (for comparison).
	NoLocationCache bool
	// CommitEvery is how often the consumer commits its offsets
	// (consumer.Loop.CommitEvery): consumer.DefaultCommitEvery if zero,
	// after every batch if negative.
	CommitEvery time.Duration
	// StartupTimeout bounds Run's wait for Kafka to answer, after which
	// Run fails naming the brokers (topics.StartupTimeout if 0).
	StartupTimeout time.Duration
	Logger         *slog.Logger
	// TracerProvider makes the service's spans (a batch, its Locate and
	// Push calls); nil makes none.
	TracerProvider trace.TracerProvider
	// Notify turns on offline notifications to a webhook (notify.go).
	Notify NotifyConfig
}

// Service is a running fan-out node.
type Service struct {
	cfg      Config
	log      *slog.Logger
	cl       *kgo.Client
	presence *presenceclient.Client
	// locs caches where users are; nil with NoLocationCache.
	locs    *locations
	Probe   health.Probe
	guard   *records.SeqGuard
	reg     *prometheus.Registry
	counts  *metrics.EventConsumer
	metrics *metrics.Service

	// edges pushes to the edge nodes.
	edges push.Edges
	// tracer makes batch spans when traced (TracerProvider set).
	tracer trace.Tracer
	traced bool
	// notifier delivers offline notifications; nil when they are off.
	notifier      *notifier
	notifications notifyMetrics
}

// New creates the Kafka client and the presence connection.
func New(cfg Config) (*Service, error) {
	if cfg.Registry == nil {
		return nil, errors.New("fanout: Config.Registry is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	reg := cfg.Registry
	m := metrics.ForService(reg, "fanout")
	guard := &records.SeqGuard{}
	cl, err := kgo.NewClient(append(topics.ClientOpts(cfg.Brokers, cfg.Kafka...), topics.GroupOpts(Group, cfg.InstanceID, append(guard.Opts(func(ps map[string][]int32) { m.Lag.Forget(Group, ps) }),
		kgo.ConsumeTopics(topics.Events),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		m.Kafka("consumer"),
	)...)...)...)
	if err != nil {
		return nil, fmt.Errorf("fanout kafka client: %w", err)
	}
	clientOpts := append(m.GRPCClient(), tracing.GRPCClient(cfg.TracerProvider)...)
	pc, err := presenceclient.Dial(cfg.PresenceAddrs, mtls.DialOption(cfg.TLS), clientOpts...)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("fanout: %w", err)
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("service", "fanout"), cl: cl,
		presence: pc, edges: push.Edges{Timeout: pushTimeout, Dial: mtls.DialOption(cfg.TLS), DialOptions: clientOpts, Pushed: pushed(m)},
		tracer: tracing.Tracer(cfg.TracerProvider), traced: cfg.TracerProvider != nil,
		guard: guard, reg: reg, metrics: m, counts: metrics.NewEventConsumer(reg, "fanout",
			"Event records set aside on "+topics.DeadLetter+" instead of pushed, by reason.", records.ReasonUndecodable, records.ReasonEmpty, records.ReasonInvalid)}
	if !cfg.NoLocationCache {
		s.locs = newLocations(pc, s.log, reg, s.locate)
	}
	if cfg.Notify.Webhook != "" {
		if err := checkWebhook(cfg.Notify.Webhook); err != nil {
			s.Close()
			return nil, fmt.Errorf("fanout: %w", err)
		}
		s.cfg.Notify.defaults()
		s.notifications = newNotifyMetrics(reg)
		if s.notifier, err = newNotifier(s.cfg, s.log, s.notifications); err != nil {
			s.Close()
			return nil, fmt.Errorf("fanout: %w", err)
		}
	}
	return s, nil
}

// Close releases what New opened, for a service whose Run is never called
// (Run releases it otherwise): a process that fails to start the parts
// after this one.
func (s *Service) Close() {
	s.cl.Close()
	s.presence.Close()
	if s.notifier != nil {
		s.notifier.cl.Close()
	}
}

// Run consumes until ctx ends. Shutdown: readiness off, finish the batch
// in hand, commit, leave the group, close connections.
func (s *Service) Run(ctx context.Context) error {
	defer func() {
		s.cl.Close()
		s.presence.Close()
		s.edges.Close()
		if s.notifier != nil {
			s.notifier.cl.Close()
		}
	}()
	if err := topics.WaitReadyWithin(ctx, s.cl, s.cfg.StartupTimeout); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("fanout: %w", err)
	}
	s.Probe.NeedKafka(ctx, s.cl)
	s.Probe.NeedGroup("consumer group", func() *kgo.Client { return s.cl })
	for _, c := range s.presence.Conns() {
		s.Probe.Need("presence "+c.Target(), health.WatchConn(ctx, c).Err)
	}
	if s.locs != nil {
		wctx, stop := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() { s.locs.watch(wctx); close(watched) }()
		defer func() { stop(); <-watched }()
	}
	s.Probe.SetReady(true)
	s.log.Info("fanout ready")
	defer s.Probe.SetReady(false)
	loop := consumer.Loop{Name: Group, Source: s.cl, MaxRecords: 1000, Log: s.log, Lag: s.metrics.Lag, Live: s.Probe.Watch("consumer", consumer.Stall),
		Handle: func(ctx context.Context, fetches kgo.Fetches) (bool, error) {
			// false: shutting down with dead letters unwritten; the batch
			// is read again.
			return s.handle(ctx, fetches.Records()), nil
		},
		Commit:      s.cl.CommitUncommittedOffsets,
		CommitEvery: consumer.CommitPeriod(s.cfg.CommitEvery),
	}
	if s.notifier == nil {
		return loop.Run(ctx)
	}
	n := s.notifier
	notify := consumer.Loop{Name: NotifierGroup, Source: n.cl, MaxRecords: 500, Log: n.log, Lag: s.metrics.Lag,
		Handle: func(ctx context.Context, fetches kgo.Fetches) (bool, error) {
			return n.handle(ctx, fetches.Records()), nil
		},
		Commit:      n.cl.CommitUncommittedOffsets,
		CommitEvery: consumer.CommitPeriod(s.cfg.CommitEvery),
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return loop.Run(gctx) })
	g.Go(func() error { return notify.Run(gctx) })
	return g.Wait()
}

// handle dead-letters what cannot be pushed and pushes the rest; once it
// returns true the batch may be committed. It returns false only when ctx
// ended before the dead letters were written.
func (s *Service) handle(ctx context.Context, recs []*kgo.Record) bool {
	ctx, span := s.startBatch(ctx, recs)
	defer span.End()
	records, ok := records.Triage(ctx, s.cl, s.log, Group, recs, s.guard, s.counts)
	if !ok {
		return false
	}
	err := s.deliver(ctx, records)
	if errors.Is(err, errNotEmitted) {
		// Committing now would lose the notifications owed.
		return false
	}
	if err != nil && ctx.Err() == nil {
		// Devices catch up from history on resume, so a failed push is
		// a delay, not a loss; the batch is committed regardless.
		span.SetStatus(codes.Error, err.Error())
		s.log.WarnContext(ctx, "fanout: delivery incomplete", "records", len(records), "err", err)
	}
	return true
}

// startBatch starts the span of one batch: a root of its own, linked to
// the span context each event record carries (the sequencer's decision),
// since one batch's pushes serve many messages and a span has one parent.
// Its Locate and Push calls are its children.
func (s *Service) startBatch(ctx context.Context, recs []*kgo.Record) (context.Context, trace.Span) {
	if !s.traced {
		return ctx, trace.SpanFromContext(ctx)
	}
	return s.tracer.Start(ctx, "fanout.batch", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(tracing.Links(recs)...),
		trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("messaging.destination.name", topics.Events),
			attribute.Int("parley.records", len(recs))))
}

// Plan plans one batch of log records: for each edge address, the
// deliveries (an event, a receipt or flags each) it gets, in log order,
// each naming only the recipients that edge holds.
func Plan(recs []*logv1.EventRecord, locs []*presencev1.UserLocation) map[string][]*edgev1.Delivery {
	items := make([]push.Item, len(recs))
	for i, rec := range recs {
		items[i] = push.Item{
			Delivery:   &edgev1.Delivery{Event: rec.GetEvent(), Receipt: rec.GetReceipt(), Flags: rec.GetFlags()},
			Recipients: rec.GetRecipientIds(),
		}
	}
	return push.Plan(items, locs)
}

// errNotEmitted is a delivery whose notifications are not all produced
// (ctx ended): the batch must not be committed.
var errNotEmitted = errors.New("offline notifications not produced")

func (s *Service) deliver(ctx context.Context, recs []*logv1.EventRecord) error {
	if len(recs) == 0 {
		return nil
	}
	seen := map[string]bool{}
	var users []string
	for _, r := range recs {
		for _, u := range r.GetRecipientIds() {
			if !seen[u] {
				seen[u] = true
				users = append(users, u)
			}
		}
	}
	locate := s.locate
	if s.locs != nil {
		locate = s.locs.locate
	}
	locs, err := locate(ctx, users)
	if err != nil {
		// Those located still get the batch; the others' devices catch
		// up on resume or at the next event's gap.
		s.log.WarnContext(ctx, "fanout: some recipients not located; their live delivery is skipped", "err", err)
	}
	located := err == nil
	plan := Plan(recs, locs)
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int("parley.recipients", len(users)), attribute.Int("parley.edges", len(plan)))
	err = s.edges.Push(ctx, plan)
	if s.notifier != nil {
		if !located {
			// Who is offline is unknown: no notification beats one to
			// every recipient an unanswering presence instance holds.
			s.log.WarnContext(ctx, "fanout: recipients not all located; this batch's offline notifications are skipped")
		} else if eerr := s.emit(ctx, recs, locs); eerr != nil {
			return fmt.Errorf("%w: %w", errNotEmitted, eerr)
		}
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.DebugContext(ctx, "fanout: batch pushed", "records", len(recs), "recipients", len(users), "edges", len(plan), "err", err)
	}
	return err
}

// locateFor bounds how long a batch waits for a presence instance that
// does not answer (one restarting replays its partitions first): events
// behind it wait too, since pushes keep log order.
const locateFor = 5 * time.Second

// locate asks presence where the users are, retrying while an instance
// fails, and returns what it could learn.
func (s *Service) locate(ctx context.Context, users []string) ([]*presencev1.UserLocation, error) {
	deadline := time.Now().Add(locateFor)
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		var locs []*presencev1.UserLocation
		var errs []error
		for rest := users; len(rest) > 0; {
			n := min(len(rest), 5000)
			resp, err := s.presence.Locate(ctx, &presencev1.LocateRequest{UserIds: rest[:n]})
			if err != nil {
				errs = append(errs, fmt.Errorf("locate %d users: %w", n, err))
			}
			locs = append(locs, resp.GetLocations()...)
			rest = rest[n:]
		}
		err := errors.Join(errs...)
		if err == nil || ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			return locs, err
		}
		select {
		case <-ctx.Done():
			return locs, err
		case <-time.After(backoff):
		}
	}
}
