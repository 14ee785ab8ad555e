// Command parley-persistence runs the persistence service on a history
// store: the embedded Pebble store (the default) or Cassandra
// (-store cassandra).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/parleychat/parley/pkg/server/consumer"
	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/transport"
	"github.com/parleychat/parley/services/persistence"
	"github.com/parleychat/parley/services/persistence/history"
	"github.com/parleychat/parley/services/persistence/history/cassandrastore"
	"github.com/parleychat/parley/services/persistence/history/pebblestore"
	"github.com/prometheus/client_golang/prometheus"
)

func main() {
	fs := flag.NewFlagSet("parley-persistence", flag.ExitOnError)
	brokers := fs.String("brokers", daemon.Env("PARLEY_KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka seed brokers, comma-separated (PARLEY_KAFKA_BROKERS)")
	grpcAddr := fs.String("grpc", daemon.Env("PARLEY_GRPC_ADDR", "127.0.0.1:7102"), "gRPC listen address (PARLEY_GRPC_ADDR)")
	httpAddr := fs.String("http", daemon.Env("PARLEY_HTTP_ADDR", "127.0.0.1:8102"), "health and metrics listen address (PARLEY_HTTP_ADDR)")
	var sc storeConfig
	fs.StringVar(&sc.kind, "store", daemon.Env("PARLEY_STORE", "pebble"), "history store: pebble (embedded) or cassandra (PARLEY_STORE)")
	fs.StringVar(&sc.pebbleDir, "pebble-dir", daemon.Env("PARLEY_PEBBLE_DIR", "data/history"), "embedded history store folder (PARLEY_PEBBLE_DIR)")
	sc.cassandraConn = cassandrastore.Register(fs)
	fs.StringVar(&sc.cassandra.Keyspace, "cassandra-keyspace", daemon.Env("PARLEY_CASSANDRA_KEYSPACE", cassandrastore.DefaultKeyspace), "Cassandra keyspace (PARLEY_CASSANDRA_KEYSPACE)")
	fs.StringVar(&sc.cassandra.Consistency, "cassandra-consistency", daemon.Env("PARLEY_CASSANDRA_CONSISTENCY", "local_quorum"), "consistency of Cassandra reads and writes: one, quorum, local_quorum, ... (PARLEY_CASSANDRA_CONSISTENCY)")
	fs.IntVar(&sc.cassandra.GroupPartitions, "cassandra-group", daemon.EnvInt("PARLEY_CASSANDRA_GROUP", cassandrastore.DefaultGroupPartitions), "how many partitions' writes share one request (an unlogged batch); 1 sends each partition's on its own, which suits large clusters (PARLEY_CASSANDRA_GROUP)")
	fs.BoolVar(&sc.migrate, "migrate", envBool("PARLEY_MIGRATE"), "with -store cassandra: create the keyspace and apply pending schema migrations before starting (PARLEY_MIGRATE=1)")
	commitEvery := fs.Duration("commit-every", daemon.EnvDuration("PARLEY_COMMIT_EVERY", consumer.DefaultCommitEvery), "how often the consumer commits its offsets; a crash or rebalance applies up to this much again, idempotently; negative: after every batch (PARLEY_COMMIT_EVERY)")
	syncMargin := fs.Duration("sync-margin", daemon.EnvDuration("PARLEY_SYNC_MARGIN", 0), "how far back a conversation-list sync token reaches, covering clock skew between persistence nodes and slow writes (PARLEY_SYNC_MARGIN; 1m if 0)")
	instance := fs.String("instance-id", daemon.Env("PARLEY_INSTANCE_ID", ""), "static consumer-group member id, stable across restarts (PARLEY_INSTANCE_ID)")
	fs.DurationVar(&sc.startupTimeout, "startup-timeout", daemon.EnvDuration("PARLEY_STARTUP_TIMEOUT", topics.StartupTimeout), "how long to wait at startup for Kafka (and Cassandra, with -store cassandra) to answer before exiting with an error (PARLEY_STARTUP_TIMEOUT)")
	tr := daemon.TracingFlags(fs, "parley-persistence")
	sec := transport.Register(fs)
	daemon.Parse(fs, os.Args[1:])
	if sc.startupTimeout <= 0 {
		sc.startupTimeout = topics.StartupTimeout
	}
	log := daemon.Logger()
	tlsSrc, kafkaOpts, err := sec.Open(log)
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	tp, flush, err := tr.Start(log)
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	reg := metrics.NewRegistry()
	store, err := openStore(log, sc, reg)
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	svc, err := persistence.New(persistence.Config{Brokers: daemon.List(*brokers), Kafka: kafkaOpts, TLS: tlsSrc, GRPCAddr: *grpcAddr, InstanceID: *instance, SyncMargin: *syncMargin, CommitEvery: *commitEvery, StartupTimeout: sc.startupTimeout, Logger: log, TracerProvider: tp, Registry: reg}, store)
	if err != nil {
		_ = store.Close()
		os.Exit(daemon.Fail(log, err))
	}
	code := daemon.RunWithMetrics(log, *httpAddr, &svc.Probe, svc.Metrics(), func(ctx context.Context) error {
		defer store.Close()
		return svc.Run(ctx)
	})
	flush()
	os.Exit(code)
}

type storeConfig struct {
	kind           string
	pebbleDir      string
	cassandraConn  *cassandrastore.Settings
	cassandra      cassandrastore.Config
	migrate        bool
	startupTimeout time.Duration
}

// openStore opens the configured history store; Cassandra's schema is
// migrated first only when asked to, once Cassandra answers. The
// Cassandra store's requests are measured on reg.
func openStore(log *slog.Logger, sc storeConfig, reg prometheus.Registerer) (history.Store, error) {
	switch sc.kind {
	case "pebble":
		s, err := pebblestore.Open(sc.pebbleDir)
		if err != nil {
			return nil, err
		}
		return s, nil
	case "cassandra":
		cfg := sc.cassandra
		if err := sc.cassandraConn.Apply(&cfg); err != nil {
			return nil, err
		}
		if err := cassandrastore.WaitReachable(context.Background(), cfg.Hosts, sc.startupTimeout); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if sc.migrate {
			start := time.Now()
			if err := cassandrastore.Migrate(ctx, cfg); err != nil {
				return nil, fmt.Errorf("migrate cassandra: %w", err)
			}
			log.Info("cassandra schema up to date", "keyspace", cfg.Keyspace, "took", time.Since(start).Round(time.Millisecond))
		}
		cfg.Metrics = cassandrastore.NewQueryMetrics(reg, "persistence")
		s, err := cassandrastore.Open(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("unknown history store %q (-store / PARLEY_STORE: pebble or cassandra)", sc.kind)
}

// envBool reads a boolean environment variable ("1", "true", ...); unset
// or unreadable is false.
func envBool(key string) bool {
	v, err := strconv.ParseBool(os.Getenv(key))
	return err == nil && v
}
