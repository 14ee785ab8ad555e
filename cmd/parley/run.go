package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/services/edge"
	"github.com/parleychat/parley/services/fanout"
	"github.com/parleychat/parley/services/platform"
)

func runCmd(args []string) int {
	fs := flag.NewFlagSet("parley run", flag.ExitOnError)
	dataDir := fs.String("data", daemon.Env("PARLEY_DATA_DIR", "data"), "folder for the embedded Kafka log and history store (PARLEY_DATA_DIR)")
	httpAddr := fs.String("http", daemon.Env("PARLEY_HTTP_ADDR", "127.0.0.1:8080"), "WebSocket endpoint and web page address (PARLEY_HTTP_ADDR)")
	adminAddr := fs.String("admin", daemon.Env("PARLEY_ADMIN_ADDR", "127.0.0.1:8100"), "the edge's /healthz, /readyz, /metrics and, with PARLEY_PPROF=1, /debug/pprof (PARLEY_ADMIN_ADDR)")
	kafkaPort := fs.Int("kafka-port", 0, "embedded Kafka port (0: any free port)")
	syncWrites := kafkaSyncFlag(fs)
	var limits edge.Limits
	limits.RegisterFlags(fs)
	var backend edge.BackendFlags
	backend.Register(fs)
	var notify fanout.NotifyConfig
	notify.RegisterFlags(fs)
	tr := daemon.TracingFlags(fs, "parley")
	fs.Usage = usageWithEnv(fs, "parley run [flags]", runEnv)
	insecureDev := fs.Bool("insecure-dev", daemon.Env("PARLEY_INSECURE_DEV", "") == "1", "serve dev tokens (and the dev secret, if PARLEY_JWT_SECRET is unset) on a non-loopback -http address (PARLEY_INSECURE_DEV=1): anyone who reaches it can act as any user")
	daemon.Parse(fs, args)
	log := daemon.Logger()
	tp, flush, err := tr.Start(log)
	if err != nil {
		return daemon.Fail(log, err)
	}
	defer flush()
	backendTokens, err := backend.Tokens()
	if err != nil {
		return daemon.Fail(log, err)
	}
	// The edge serves /healthz, /readyz and every service's /metrics on -admin.
	return daemon.Run(log, "", nil, func(ctx context.Context) error {
		p, err := platform.Start(ctx, platform.Config{
			DataDir: *dataDir, HTTPAddr: *httpAddr, AdminAddr: *adminAddr, Limits: limits, KafkaPort: *kafkaPort, KafkaSyncWrites: *syncWrites,
			JWTSecret: secret(), DevTokens: true, InsecureDev: *insecureDev, Logger: log, TracerProvider: tp,
			BackendAddr: backend.Addr, BackendTokens: backendTokens, BackendRate: backend.Rate, Notify: notify,
		})
		if err != nil {
			return err
		}
		go func() {
			for !p.Ready() && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
			}
			if ctx.Err() == nil {
				backendLine := ""
				if a := p.Edge.BackendAddr(); a != "" {
					backendLine = "\n  backend:   " + a + " (gRPC, parley.backend.v1)"
				}
				fmt.Printf("\nParley is running.\n  web chat:  http://%s/\n  WebSocket: %s%s\n  admin:     http://%s/metrics\n  Kafka:     %v (embedded)\n  data:      %s\nStop with Ctrl-C.\n\n",
					p.Edge.HTTPAddr(), p.URL(), backendLine, p.Edge.AdminAddr(), p.Kafka.ListenAddrs(), *dataDir)
			}
		}()
		return p.Run(ctx)
	})
}

// runEnv lists what `parley run` reads from the environment only.
const runEnv = `
environment:
  PARLEY_JWT_SECRET  the HS256 secret the edge verifies client tokens with,
                     and parley token and parley chat sign them with: any
                     random string of at least 16 bytes (openssl rand
                     -base64 32); give your app's login the same one.
                     Unset: the public dev secret, on loopback only.
  PARLEY_LOG_LEVEL   debug, info, warn or error
`

// usageWithEnv is a -h that prints the flags, then env.
func usageWithEnv(fs *flag.FlagSet, synopsis, env string) func() {
	return func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), env)
	}
}

func kfakeCmd(args []string) int {
	fs := flag.NewFlagSet("parley kfake", flag.ExitOnError)
	dataDir := fs.String("data", daemon.Env("PARLEY_DATA_DIR", "data/kafka"), "folder for the log (PARLEY_DATA_DIR)")
	port := fs.Int("port", 9092, "listen port on 127.0.0.1")
	syncWrites := kafkaSyncFlag(fs)
	daemon.Parse(fs, args)
	log := daemon.Logger()
	return daemon.Run(log, "", nil, func(ctx context.Context) error {
		c, err := platform.OpenKafka(ctx, *dataDir, *port, *syncWrites)
		if err != nil {
			return err
		}
		defer c.Close()
		log.Info("embedded kafka ready", "addrs", c.ListenAddrs(), "data", *dataDir)
		<-ctx.Done()
		return nil
	})
}

// kafkaSyncFlag is -kafka-sync-writes, shared by run and kfake.
func kafkaSyncFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("kafka-sync-writes", daemon.Env("PARLEY_KAFKA_SYNC_WRITES", "") == "1",
		"fsync every embedded Kafka batch before acknowledging it, so an accepted message survives a power loss; slower under load (PARLEY_KAFKA_SYNC_WRITES=1). Off, the log is written before each answer (any process crash keeps it) and flushed to disk every second")
}
