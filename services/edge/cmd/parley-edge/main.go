// Command parley-edge runs an edge (WebSocket gateway) node.
package main

import (
	"flag"
	"os"

	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/services/edge"
)

func main() {
	fs := flag.NewFlagSet("parley-edge", flag.ExitOnError)
	httpAddr := fs.String("http", daemon.Env("PARLEY_HTTP_ADDR", "127.0.0.1:8080"), "WebSocket, page and health listen address (PARLEY_HTTP_ADDR)")
	grpcAddr := fs.String("grpc", daemon.Env("PARLEY_GRPC_ADDR", "127.0.0.1:7100"), "Push gRPC listen address (PARLEY_GRPC_ADDR)")
	pushAddr := fs.String("push-addr", daemon.Env("PARLEY_PUSH_ADDR", ""), "address fan-out uses to reach -grpc (PARLEY_PUSH_ADDR; the bound address if empty)")
	nodeID := fs.String("node-id", daemon.Env("PARLEY_NODE_ID", ""), "this node's id (PARLEY_NODE_ID; random if empty)")
	ingestAddr := fs.String("ingest", daemon.Env("PARLEY_INGEST_ADDR", "127.0.0.1:7101"), "ingest gRPC address (PARLEY_INGEST_ADDR)")
	persistenceAddr := fs.String("persistence", daemon.Env("PARLEY_PERSISTENCE_ADDR", "127.0.0.1:7102"), "persistence gRPC address (PARLEY_PERSISTENCE_ADDR)")
	presenceAddr := fs.String("presence", daemon.Env("PARLEY_PRESENCE_ADDR", "127.0.0.1:7104"), "presence gRPC addresses, comma-separated in instance order (PARLEY_PRESENCE_ADDR)")
	secret := fs.String("jwt-secret", daemon.Env("PARLEY_JWT_SECRET", ""), "HS256 secret for client tokens, at least 16 bytes (PARLEY_JWT_SECRET)")
	queueLimit := fs.Int("queue-limit", daemon.EnvInt("PARLEY_QUEUE_LIMIT", 0), "items queued per connection before it is closed with 4000 resync (PARLEY_QUEUE_LIMIT; 1024 if 0)")
	writeTimeout := fs.Duration("write-timeout", daemon.EnvDuration("PARLEY_WRITE_TIMEOUT", 0), "bound on one socket write; a connection that stays blocked longer is closed (PARLEY_WRITE_TIMEOUT; 10s if 0)")
	resumeWait := fs.Duration("resume-wait", daemon.EnvDuration("PARLEY_RESUME_WAIT", 0), "how long a resume waits for history to reach the log's head before reporting the conversation failed (PARLEY_RESUME_WAIT; 5s if 0)")
	devTokens := fs.Bool("dev-tokens", daemon.Env("PARLEY_DEV_TOKENS", "") == "1", "serve /v1/dev/token to anyone: local use only (PARLEY_DEV_TOKENS=1)")
	var tlsFiles mtls.Files
	mtls.Register(fs, &tlsFiles, "", "", "internal gRPC")
	daemon.Parse(fs, os.Args[1:])
	log := daemon.Logger()
	tlsSrc, err := mtls.OpenMutual(tlsFiles)
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	svc, err := edge.New(edge.Config{Registry: metrics.NewRegistry(),
		HTTPAddr: *httpAddr, GRPCAddr: *grpcAddr, PushAddr: *pushAddr, NodeID: *nodeID,
		IngestAddr: *ingestAddr, PersistenceAddr: *persistenceAddr, PresenceAddrs: daemon.List(*presenceAddr), TLS: tlsSrc,
		JWTSecret: []byte(*secret), DevTokens: *devTokens, QueueLimit: *queueLimit, WriteTimeout: *writeTimeout, ResumeWait: *resumeWait, Logger: log,
	})
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	// The edge serves its probes on its own HTTP address.
	os.Exit(daemon.Run(log, "", svc.Probe.Ready, svc.Run))
}
