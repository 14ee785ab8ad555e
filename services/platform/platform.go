// Package platform runs every Parley service in one process on embedded
// defaults: franz-go's kfake as the Kafka cluster (persisted to disk) and
// the Pebble history store. The services still talk to each other over
// loopback gRPC and Kafka, exactly as separate processes do.
package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/services/edge"
	"github.com/parleychat/parley/services/fanout"
	"github.com/parleychat/parley/services/ingest"
	"github.com/parleychat/parley/services/persistence"
	"github.com/parleychat/parley/services/persistence/history"
	"github.com/parleychat/parley/services/persistence/history/pebblestore"
	"github.com/parleychat/parley/services/presence"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
)

// Config configures the embedded platform.
type Config struct {
	// DataDir holds kafka/ and history/; both survive restarts.
	DataDir string
	// HTTPAddr is the edge's public address (WebSocket, page).
	HTTPAddr string
	// AdminAddr is the edge's admin address (probes, metrics); any free
	// loopback port if empty.
	AdminAddr string
	// Limits are the edge's (edge.DefaultLimits where zero).
	Limits edge.Limits
	// KafkaPort is kfake's port, 0 for any.
	KafkaPort int
	// KafkaSyncWrites fsyncs every batch before it is acknowledged
	// (OpenKafka); otherwise the log is flushed every KafkaFlushEvery.
	KafkaSyncWrites bool
	JWTSecret       []byte
	DevTokens       bool
	// InsecureDev lets DevTokens or the public dev secret serve on a
	// non-loopback HTTPAddr (edge.Config.InsecureDev).
	InsecureDev bool
	// TokenWarning is the edge's (edge.Config.TokenWarning).
	TokenWarning time.Duration
	// JWKSURL, JWTIssuer and JWTAudience are the edge's: tokens from an
	// identity provider, and the iss and aud every token must carry.
	JWKSURL, JWTIssuer, JWTAudience string
	Partitions                      int32
	// PresenceLease is how long a silent edge keeps its sessions.
	PresenceLease time.Duration
	// PresenceInstances split the users (2 if 0, so the split is always
	// exercised); it must divide Partitions.
	PresenceInstances int
	// BackendAddr and BackendTokens are the edge's backend API
	// (edge.Config.BackendAddr); off if BackendAddr is empty.
	BackendAddr   string
	BackendTokens []edge.BackendToken
	// BackendRate bounds each token's calls (edge.Config.BackendRate).
	BackendRate edge.Rate
	// Notify is fan-out's offline notifications (fanout.Config.Notify);
	// off while its Webhook is empty.
	Notify fanout.NotifyConfig
	// MaxMembers bounds a conversation's size (ingest's default if zero).
	MaxMembers int
	Logger     *slog.Logger
	// TracerProvider makes every service's spans; nil makes none.
	TracerProvider trace.TracerProvider
}

// Platform is a started platform.
type Platform struct {
	Kafka       *Kafka
	Presence    []*presence.Service
	Persistence *persistence.Service
	Ingest      *ingest.Service
	Fanout      *fanout.Service
	Edge        *edge.Service
	store       *pebblestore.Store
	log         *slog.Logger
}

// Start builds every part and binds every listener; Run starts serving.
func Start(ctx context.Context, cfg Config) (p *Platform, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = topics.LocalSpec.Partitions
	}
	// A secret the edge would refuse is known before anything starts.
	if len(cfg.JWTSecret) > 0 || cfg.JWKSURL == "" {
		if _, err := auth.NewHS256(cfg.JWTSecret); err != nil {
			return nil, fmt.Errorf("platform: %w", err)
		}
	}
	// The error paths return a nil *Platform, so the cleanup holds its own
	// reference to what was started.
	started := &Platform{log: cfg.Logger}
	defer func() {
		if err != nil {
			started.abort()
		}
	}()
	p = started
	if p.Kafka, err = OpenKafka(ctx, filepath.Join(cfg.DataDir, "kafka"), cfg.KafkaPort, cfg.KafkaSyncWrites); err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	brokers := p.Kafka.ListenAddrs()
	if err := provision(ctx, brokers, topics.Spec{Partitions: cfg.Partitions, ReplicationFactor: 1, MinInsyncReplicas: 1}); err != nil {
		return nil, err
	}
	if p.store, err = pebblestore.Open(filepath.Join(cfg.DataDir, "history")); err != nil {
		return nil, err
	}
	if cfg.PresenceInstances <= 0 {
		cfg.PresenceInstances = 2
	}
	// Each service keeps its own registry, as it would in a process of
	// its own; the edge's /metrics serves them all (metrics.Merged).
	regs := []prometheus.Gatherer{}
	registry := func() *prometheus.Registry {
		r := metrics.NewRegistry()
		regs = append(regs, r)
		return r
	}
	edgeReg := registry()
	var presenceAddrs []string
	for i := range cfg.PresenceInstances {
		pr, err := presence.New(presence.Config{GRPCAddr: "127.0.0.1:0", Brokers: brokers, Instance: i, Instances: cfg.PresenceInstances, Lease: cfg.PresenceLease, Registry: registry(),
			// In one process nothing is far: a short lease keeps the wait
			// after a start short.
			WatchLease: 500 * time.Millisecond, Logger: cfg.Logger, TracerProvider: cfg.TracerProvider})
		if err != nil {
			return nil, err
		}
		p.Presence = append(p.Presence, pr)
		presenceAddrs = append(presenceAddrs, pr.Addr())
	}
	if p.Persistence, err = persistence.New(persistence.Config{Brokers: brokers, GRPCAddr: "127.0.0.1:0", Logger: cfg.Logger, Registry: registry(),
		TracerProvider: cfg.TracerProvider}, p.store); err != nil {
		return nil, err
	}
	if p.Ingest, err = ingest.New(ingest.Config{Brokers: brokers, GRPCAddr: "127.0.0.1:0", Registry: registry(),
		// A fixed instance id keeps the sequencer's transactional id across
		// restarts, so a restart after a crash aborts the transaction the
		// crash left open instead of waiting out its timeout.
		InstanceID: "ingest-0", MaxMembers: cfg.MaxMembers, Logger: cfg.Logger, TracerProvider: cfg.TracerProvider}); err != nil {
		return nil, err
	}
	if p.Fanout, err = fanout.New(fanout.Config{Brokers: brokers, PresenceAddrs: presenceAddrs, Logger: cfg.Logger, Registry: registry(),
		TracerProvider: cfg.TracerProvider, Notify: cfg.Notify}); err != nil {
		return nil, err
	}
	p.Edge, err = edge.New(edge.Config{Registry: edgeReg, Metrics: metrics.Merged(regs...),
		HTTPAddr: cfg.HTTPAddr, AdminAddr: cfg.AdminAddr, Limits: cfg.Limits, GRPCAddr: "127.0.0.1:0",
		IngestAddr: p.Ingest.Addr(), PersistenceAddr: p.Persistence.Addr(), PresenceAddrs: presenceAddrs,
		JWTSecret: cfg.JWTSecret, DevTokens: cfg.DevTokens, InsecureDev: cfg.InsecureDev, TokenWarning: cfg.TokenWarning, Logger: cfg.Logger, TracerProvider: cfg.TracerProvider,
		JWKSURL: cfg.JWKSURL, JWTIssuer: cfg.JWTIssuer, JWTAudience: cfg.JWTAudience,
		BackendAddr: cfg.BackendAddr, BackendTokens: cfg.BackendTokens, BackendRate: cfg.BackendRate,
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func provision(ctx context.Context, brokers []string, spec topics.Spec) error {
	cl, err := kgo.NewClient(topics.ClientOpts(brokers)...)
	if err != nil {
		return fmt.Errorf("platform: kafka admin client: %w", err)
	}
	defer cl.Close()
	if err := topics.WaitReady(ctx, cl); err != nil {
		return err
	}
	return topics.Ensure(ctx, kadm.NewClient(cl), spec)
}

// Ready reports whether every service is ready.
func (p *Platform) Ready() bool {
	return p.Edge.Probe.Ready() && p.Ingest.Probe.Ready() && p.Persistence.Probe.Ready() &&
		p.Fanout.Probe.Ready() && !slices.ContainsFunc(p.Presence, func(s *presence.Service) bool { return !s.Probe.Ready() })
}

// Store is the history store persistence writes. Tests compare it with a
// store rebuilt from the log.
func (p *Platform) Store() history.Store { return p.store }

// URL is the WebSocket endpoint.
func (p *Platform) URL() string { return "ws://" + p.Edge.HTTPAddr() + "/ws" }

// Run serves until ctx ends or a service fails, then stops the services in
// order: edge (no new input, clients told to go), ingest (in-flight Submits
// answered, sequencer batch committed), fan-out, persistence (batch in hand
// stored), presence; then the store and Kafka close.
func (p *Platform) Run(ctx context.Context) error {
	defer p.close()
	type part struct {
		name   string
		run    func(context.Context) error
		cancel context.CancelFunc
		done   chan error
	}
	parts := []*part{
		{name: "edge", run: p.Edge.Run},
		{name: "ingest", run: p.Ingest.Run},
		{name: "fanout", run: p.Fanout.Run},
		{name: "persistence", run: p.Persistence.Run},
	}
	for i, pr := range p.Presence {
		parts = append(parts, &part{name: fmt.Sprintf("presence-%d", i), run: pr.Run})
	}
	failed := make(chan string, len(parts))
	for _, pt := range parts {
		var pctx context.Context
		pctx, pt.cancel = context.WithCancel(context.WithoutCancel(ctx))
		pt.done = make(chan error, 1)
		go func() {
			err := pt.run(pctx)
			pt.done <- err
			if pctx.Err() == nil {
				failed <- pt.name
			}
		}()
	}
	select {
	case <-ctx.Done():
	case name := <-failed:
		p.log.Error("platform: a service stopped; shutting down", "service", name)
	}
	var errs []error
	for _, pt := range parts {
		pt.cancel()
		if err := <-pt.done; err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", pt.name, err))
		}
	}
	return errors.Join(errs...)
}

// abort releases what a failed Start had started: the services, whose
// Run was never called, then the store and Kafka.
func (p *Platform) abort() {
	if p.Edge != nil {
		p.Edge.Close()
	}
	if p.Fanout != nil {
		p.Fanout.Close()
	}
	if p.Ingest != nil {
		p.Ingest.Close()
	}
	if p.Persistence != nil {
		p.Persistence.Close()
	}
	for _, pr := range p.Presence {
		pr.Close()
	}
	p.close()
}

func (p *Platform) close() {
	if p.store != nil {
		_ = p.store.Close()
	}
	if p.Kafka != nil {
		p.Kafka.Close()
	}
}
