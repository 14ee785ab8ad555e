// Command parley-edge runs an edge (WebSocket gateway) node.
package main

import (
	"flag"
	"os"
	"time"

	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/metrics"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/services/edge"
)

func main() {
	fs := flag.NewFlagSet("parley-edge", flag.ExitOnError)
	httpAddr := fs.String("http", daemon.Env("PARLEY_HTTP_ADDR", "127.0.0.1:8080"), "public listen address: the WebSocket and the page (PARLEY_HTTP_ADDR)")
	adminAddr := fs.String("admin", daemon.Env("PARLEY_ADMIN_ADDR", "127.0.0.1:8100"), "admin listen address: /healthz, /readyz, /metrics and, with PARLEY_PPROF=1, /debug/pprof (PARLEY_ADMIN_ADDR)")
	grpcAddr := fs.String("grpc", daemon.Env("PARLEY_GRPC_ADDR", "127.0.0.1:7100"), "Push gRPC listen address (PARLEY_GRPC_ADDR)")
	pushAddr := fs.String("push-addr", daemon.Env("PARLEY_PUSH_ADDR", ""), "address fan-out uses to reach -grpc (PARLEY_PUSH_ADDR; the bound address if empty)")
	nodeID := fs.String("node-id", daemon.Env("PARLEY_NODE_ID", ""), "this node's id (PARLEY_NODE_ID; random if empty)")
	ingestAddr := fs.String("ingest", daemon.Env("PARLEY_INGEST_ADDR", "127.0.0.1:7101"), "ingest gRPC address (PARLEY_INGEST_ADDR)")
	persistenceAddr := fs.String("persistence", daemon.Env("PARLEY_PERSISTENCE_ADDR", "127.0.0.1:7102"), "persistence gRPC address (PARLEY_PERSISTENCE_ADDR)")
	presenceAddr := fs.String("presence", daemon.Env("PARLEY_PRESENCE_ADDR", "127.0.0.1:7104"), "presence gRPC addresses, comma-separated in instance order (PARLEY_PRESENCE_ADDR)")
	secret := fs.String("jwt-secret", daemon.Env("PARLEY_JWT_SECRET", ""), "HS256 secret for client tokens, at least 16 bytes (PARLEY_JWT_SECRET); optional with -jwks-url")
	jwksURL := fs.String("jwks-url", daemon.Env("PARLEY_JWKS_URL", ""), "identity provider's JWKS url: RS256, ES256 and EdDSA tokens verify against its keys (PARLEY_JWKS_URL; https, or http on loopback)")
	issuer := fs.String("jwt-issuer", daemon.Env("PARLEY_JWT_ISSUER", ""), "required iss of every token (PARLEY_JWT_ISSUER; not checked if empty)")
	audience := fs.String("jwt-audience", daemon.Env("PARLEY_JWT_AUDIENCE", ""), "required aud of every token (PARLEY_JWT_AUDIENCE; not checked if empty)")
	jwksRefresh := fs.Duration("jwks-refresh", daemon.EnvDuration("PARLEY_JWKS_REFRESH", 0), "how often the JWKS is fetched again (PARLEY_JWKS_REFRESH; 1h if 0)")
	jwksMinRefresh := fs.Duration("jwks-min-refresh", daemon.EnvDuration("PARLEY_JWKS_MIN_REFRESH", 0), "at most one JWKS fetch per this for tokens with an unknown kid (PARLEY_JWKS_MIN_REFRESH; 30s if 0)")
	tokenWarning := fs.Duration("token-warning", daemon.EnvDuration("PARLEY_TOKEN_WARNING", 0), "push token_expiring this long before a connection's token expires (PARLEY_TOKEN_WARNING; 1m if 0)")
	insecureDev := fs.Bool("insecure-dev", daemon.Env("PARLEY_INSECURE_DEV", "") == "1", "allow -dev-tokens or the public dev secret on non-loopback addresses (PARLEY_INSECURE_DEV=1): anyone can then act as any user")
	queueLimit := fs.Int("queue-limit", daemon.EnvInt("PARLEY_QUEUE_LIMIT", 0), "items queued per connection before it is closed with 4000 resync (PARLEY_QUEUE_LIMIT; 1024 if 0)")
	writeTimeout := fs.Duration("write-timeout", daemon.EnvDuration("PARLEY_WRITE_TIMEOUT", 0), "bound on one socket write; a connection that stays blocked longer is closed (PARLEY_WRITE_TIMEOUT; 10s if 0)")
	resumeWait := fs.Duration("resume-wait", daemon.EnvDuration("PARLEY_RESUME_WAIT", 0), "how long a resume waits for history to reach the log's head before reporting the conversation failed (PARLEY_RESUME_WAIT; 5s if 0)")
	drain := fs.Duration("drain", daemon.EnvDuration("PARLEY_EDGE_DRAIN", 10*time.Second), "on SIGTERM, close the live connections with 4002 (reconnect elsewhere) in batches spread over this window; 0 closes them all at once (PARLEY_EDGE_DRAIN)")
	devTokens := fs.Bool("dev-tokens", daemon.Env("PARLEY_DEV_TOKENS", "") == "1", "serve /v1/dev/token to anyone: local use only (PARLEY_DEV_TOKENS=1)")
	var limits edge.Limits
	limits.RegisterFlags(fs)
	var backend edge.BackendFlags
	backend.Register(fs)
	tr := daemon.TracingFlags(fs, "parley-edge")
	var tlsFiles mtls.Files
	mtls.Register(fs, &tlsFiles, "", "", "internal gRPC")
	daemon.Parse(fs, os.Args[1:])
	log := daemon.Logger()
	tlsSrc, err := mtls.OpenMutual(tlsFiles)
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	backendTokens, err := backend.Tokens()
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	tp, flush, err := tr.Start(log)
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	svc, err := edge.New(edge.Config{Registry: metrics.NewRegistry(),
		HTTPAddr: *httpAddr, AdminAddr: *adminAddr, Limits: limits, GRPCAddr: *grpcAddr, PushAddr: *pushAddr, NodeID: *nodeID,
		BackendAddr: backend.Addr, BackendTokens: backendTokens, BackendRate: backend.Rate,
		IngestAddr: *ingestAddr, PersistenceAddr: *persistenceAddr, PresenceAddrs: daemon.List(*presenceAddr), TLS: tlsSrc,
		JWTSecret: []byte(*secret), JWKSURL: *jwksURL, JWTIssuer: *issuer, JWTAudience: *audience, JWKSRefresh: *jwksRefresh, JWKSMinRefresh: *jwksMinRefresh,
		TokenWarning: *tokenWarning, DevTokens: *devTokens, InsecureDev: *insecureDev, QueueLimit: *queueLimit, WriteTimeout: *writeTimeout, ResumeWait: *resumeWait, Logger: log, Drain: *drain, TracerProvider: tp,
	})
	if err != nil {
		os.Exit(daemon.Fail(log, err))
	}
	// The edge serves its probes on its own admin address.
	code := daemon.Run(log, "", &svc.Probe, svc.Run)
	flush()
	os.Exit(code)
}
