// Command parley-ingest runs the ingest service and its sequencer.
package main

import (
	"flag"
	"os"

	"github.com/parleychat/parley/pkg/server/consumer"
	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/pkg/server/transport"
	"github.com/parleychat/parley/services/ingest"
)

func main() {
	fs := flag.NewFlagSet("parley-ingest", flag.ExitOnError)
	brokers := fs.String("brokers", daemon.Env("PARLEY_KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka seed brokers, comma-separated (PARLEY_KAFKA_BROKERS)")
	grpcAddr := fs.String("grpc", daemon.Env("PARLEY_GRPC_ADDR", "127.0.0.1:7101"), "gRPC listen address (PARLEY_GRPC_ADDR)")
	httpAddr := fs.String("http", daemon.Env("PARLEY_HTTP_ADDR", "127.0.0.1:8101"), "health and metrics listen address (PARLEY_HTTP_ADDR)")
	timeout := fs.Duration("submit-timeout", daemon.EnvDuration("PARLEY_SUBMIT_TIMEOUT", 0), "wait for the sequencer's outcome (PARLEY_SUBMIT_TIMEOUT; 10s if 0)")
	instance := fs.String("instance-id", daemon.Env("PARLEY_INSTANCE_ID", ""), "static consumer-group member id, stable across restarts (PARLEY_INSTANCE_ID)")
	maxMembers := fs.Int("max-members", daemon.EnvInt("PARLEY_MAX_MEMBERS", ingest.DefaultMembers), "members a group or channel may hold; adding, joining or following beyond it is CONVERSATION_FULL (PARLEY_MAX_MEMBERS)")
	startupTimeout := fs.Duration("startup-timeout", daemon.EnvDuration("PARLEY_STARTUP_TIMEOUT", topics.StartupTimeout), "how long to wait at startup for Kafka to answer before exiting with an error (PARLEY_STARTUP_TIMEOUT)")
	linger := fs.Duration("command-linger", daemon.EnvDuration("PARLEY_COMMAND_LINGER", 0), "how long a command waits for others to share its produce request to Kafka; 0: none (PARLEY_COMMAND_LINGER)")
	window := fs.Duration("batch-window", daemon.EnvDuration("PARLEY_BATCH_WINDOW", consumer.DefaultBatchWindow), "how long the sequencer collects commands after a batch's first before one transaction decides them all; it stops early when a quarter of it, or 4 ms if less, brings nothing; negative: one poll per batch (PARLEY_BATCH_WINDOW)")
	tr := daemon.TracingFlags(fs, "parley-ingest")
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
	svc, err := ingest.New(ingest.Config{Brokers: daemon.List(*brokers), Kafka: kafkaOpts, TLS: tlsSrc, InstanceID: *instance, MaxMembers: *maxMembers, BatchWindow: *window, CommandLinger: *linger, GRPCAddr: *grpcAddr, SubmitTimeout: *timeout, StartupTimeout: *startupTimeout, Logger: log, TracerProvider: tp, Registry: metrics.NewRegistry()})
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	code := daemon.RunWithMetrics(log, *httpAddr, &svc.Probe, svc.Metrics(), svc.Run)
	flush()
	os.Exit(code)
}
