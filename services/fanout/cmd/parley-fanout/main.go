// Command parley-fanout runs the fan-out service.
package main

import (
	"flag"
	"os"

	"github.com/parleychat/parley/pkg/server/consumer"
	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/transport"
	"github.com/parleychat/parley/services/fanout"
)

func main() {
	fs := flag.NewFlagSet("parley-fanout", flag.ExitOnError)
	brokers := fs.String("brokers", daemon.Env("PARLEY_KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka seed brokers, comma-separated (PARLEY_KAFKA_BROKERS)")
	presenceAddr := fs.String("presence", daemon.Env("PARLEY_PRESENCE_ADDR", "127.0.0.1:7104"), "presence gRPC addresses, comma-separated in instance order (PARLEY_PRESENCE_ADDR)")
	httpAddr := fs.String("http", daemon.Env("PARLEY_HTTP_ADDR", "127.0.0.1:8103"), "health and metrics listen address (PARLEY_HTTP_ADDR)")
	instance := fs.String("instance-id", daemon.Env("PARLEY_INSTANCE_ID", ""), "static consumer-group member id, stable across restarts (PARLEY_INSTANCE_ID)")
	noCache := fs.Bool("no-location-cache", false, "ask presence where recipients are for every batch instead of caching under a lease (for comparison)")
	commitEvery := fs.Duration("commit-every", daemon.EnvDuration("PARLEY_COMMIT_EVERY", consumer.DefaultCommitEvery), "how often the consumer commits its offsets; a crash or rebalance pushes up to this much again, which devices drop by seq; negative: after every batch (PARLEY_COMMIT_EVERY)")
	startupTimeout := fs.Duration("startup-timeout", daemon.EnvDuration("PARLEY_STARTUP_TIMEOUT", topics.StartupTimeout), "how long to wait at startup for Kafka to answer before exiting with an error (PARLEY_STARTUP_TIMEOUT)")
	var notify fanout.NotifyConfig
	notify.RegisterFlags(fs)
	tr := daemon.TracingFlags(fs, "parley-fanout")
	sec := transport.Register(fs)
	daemon.Parse(fs, os.Args[1:])
	log := daemon.Logger()
	tlsSrc, kafkaOpts, err := sec.Open(log)
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	tp, flush, err := tr.Start(log)
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	svc, err := fanout.New(fanout.Config{Brokers: daemon.List(*brokers), Kafka: kafkaOpts, TLS: tlsSrc, InstanceID: *instance, PresenceAddrs: daemon.List(*presenceAddr), NoLocationCache: *noCache, CommitEvery: *commitEvery, StartupTimeout: *startupTimeout, Logger: log, TracerProvider: tp, Registry: metrics.NewRegistry(), Notify: notify})
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	code := daemon.RunWithMetrics(log, *httpAddr, &svc.Probe, svc.Metrics(), svc.Run)
	flush()
	os.Exit(code)
}
