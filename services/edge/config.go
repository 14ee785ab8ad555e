package edge

import (
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// Config configures the service.
type Config struct {
	// HTTPAddr is the public address: /ws and the web page.
	HTTPAddr string
	// AdminAddr serves /healthz, /readyz, /metrics and (PARLEY_PPROF=1)
	// /debug/pprof, never on HTTPAddr; any free loopback port if empty.
	AdminAddr string
	// GRPCAddr serves EdgeService.Push.
	GRPCAddr string
	// BackendAddr serves the backend API (parley.backend.v1) to an
	// application's own servers; off if empty. BackendTokens are the
	// service tokens it accepts: at least one, each at least
	// MinBackendTokenLen bytes, or New fails.
	BackendAddr   string
	BackendTokens []BackendToken
	// BackendRate bounds each service token's calls to the backend API
	// (DefaultBackendRate when zero; Off turns it off).
	BackendRate Rate
	// PushAddr is how fan-out reaches GRPCAddr; the bound address if empty.
	PushAddr        string
	NodeID          string
	IngestAddr      string
	PersistenceAddr string
	// PresenceAddrs are the presence instances, in instance order.
	PresenceAddrs []string
	// TLS, when set, is the internal mTLS: Push requires a client
	// certificate from its CA, and the node's own gRPC clients (ingest,
	// persistence, presence, other edges) present one.
	TLS *mtls.Source
	// JWTSecret verifies HS256 tokens (and signs dev tokens).
	JWTSecret []byte
	// JWKSURL, JWTIssuer, JWTAudience, JWKSRefresh and JWKSMinRefresh
	// configure the verifier (auth.Config): RS256, ES256 and EdDSA tokens
	// from an identity provider's key set, and the iss and aud every token
	// must carry when set. A JWKSURL alone (no JWTSecret) is enough.
	JWKSURL                     string
	JWTIssuer, JWTAudience      string
	JWKSRefresh, JWKSMinRefresh time.Duration
	// DevTokens serves GET /v1/dev/token?user=NAME, minting a token for
	// anyone who asks. For local use only: with it, or with the public
	// auth.DevSecret as JWTSecret, New refuses any listener off loopback
	// unless InsecureDev is set.
	DevTokens bool
	// InsecureDev lets dev tokens and the dev secret serve on non-loopback
	// addresses (a demo on a LAN); it is logged loudly.
	InsecureDev bool
	// TokenWarning is how long before a connection's token expires the
	// edge pushes token_expiring (1 minute if 0); at expiry, unless a
	// refresh_token came, it closes the connection with 4001.
	TokenWarning time.Duration

	MaxFrameBytes  int
	QueueLimit     int
	AuthTimeout    time.Duration
	RequestTimeout time.Duration
	WriteTimeout   time.Duration
	// ResumeWait bounds how long a resume waits for history (persistence)
	// to reach the conversation's head or the live events.
	ResumeWait time.Duration
	// Heartbeat is how often the node renews its presence lease.
	Heartbeat time.Duration
	// Drain is the window over which shutdown closes the live connections
	// (with CloseReconnect), in batches spread evenly across it, so that
	// their clients reconnect to other nodes a few at a time rather than
	// all at once. 0 closes them all at once.
	Drain time.Duration
	// Limits bound what one client, user or address may cost the node.
	Limits Limits
	Logger *slog.Logger
	// Registry holds the service's metrics; the caller makes it
	// (metrics.NewRegistry) and may serve it too. Required.
	Registry *prometheus.Registry
	// Metrics is what /metrics serves: Registry if nil. The embedded
	// platform serves every service's registry there (metrics.Merged).
	Metrics prometheus.Gatherer
	// TracerProvider makes the edge's spans (frames, calls, pushes); nil
	// makes none.
	TracerProvider trace.TracerProvider
}

func (c *Config) defaults() {
	if c.NodeID == "" {
		c.NodeID = "edge-" + uuid.NewString()[:8]
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = wire.MaxFrameBytes
	}
	if c.QueueLimit <= 0 {
		c.QueueLimit = 1024
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 15 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.ResumeWait <= 0 {
		c.ResumeWait = 5 * time.Second
	}
	if c.TokenWarning <= 0 {
		c.TokenWarning = time.Minute
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.AdminAddr == "" {
		c.AdminAddr = "127.0.0.1:0"
	}
	c.Limits.defaults()
}
