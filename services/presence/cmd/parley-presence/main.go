// Command parley-presence runs the presence service.
package main

import (
	"flag"
	"os"

	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/transport"
	"github.com/parleychat/parley/services/presence"
)

func main() {
	fs := flag.NewFlagSet("parley-presence", flag.ExitOnError)
	grpcAddr := fs.String("grpc", daemon.Env("PARLEY_GRPC_ADDR", "127.0.0.1:7104"), "gRPC listen address (PARLEY_GRPC_ADDR)")
	httpAddr := fs.String("http", daemon.Env("PARLEY_HTTP_ADDR", "127.0.0.1:8104"), "health and metrics listen address (PARLEY_HTTP_ADDR)")
	brokers := fs.String("brokers", daemon.Env("PARLEY_KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka bootstrap brokers, comma-separated (PARLEY_KAFKA_BROKERS)")
	instance := fs.Int("instance", daemon.EnvInt("PARLEY_PRESENCE_INSTANCE", 0), "this instance's index, 0 to instances-1: it owns the partitions p with p mod instances = index (PARLEY_PRESENCE_INSTANCE)")
	instances := fs.Int("instances", daemon.EnvInt("PARLEY_PRESENCE_INSTANCES", 1), "how many presence instances split the users; must divide the partition count (PARLEY_PRESENCE_INSTANCES)")
	lease := fs.Duration("lease", daemon.EnvDuration("PARLEY_PRESENCE_LEASE", presence.DefaultLease), "how long a silent edge keeps its sessions (PARLEY_PRESENCE_LEASE)")
	startupTimeout := fs.Duration("startup-timeout", daemon.EnvDuration("PARLEY_STARTUP_TIMEOUT", topics.StartupTimeout), "how long to wait at startup for Kafka to answer before exiting with an error (PARLEY_STARTUP_TIMEOUT)")
	tr := daemon.TracingFlags(fs, "parley-presence")
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
	svc, err := presence.New(presence.Config{GRPCAddr: *grpcAddr, Brokers: daemon.List(*brokers), Kafka: kafkaOpts, TLS: tlsSrc, Instance: *instance, Instances: *instances, Lease: *lease, StartupTimeout: *startupTimeout, Logger: log, TracerProvider: tp, Registry: metrics.NewRegistry()})
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	code := daemon.RunWithMetrics(log, *httpAddr, &svc.Probe, svc.Metrics(), svc.Run)
	flush()
	os.Exit(code)
}
