package edge

import (
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures the service.
type Config struct {
	// HTTPAddr serves /ws, the web page, /healthz and /readyz.
	HTTPAddr string
	// GRPCAddr serves EdgeService.Push.
	GRPCAddr string
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
	// JWTSecret verifies HS256 tokens.
	JWTSecret []byte
	// DevTokens serves GET /v1/dev/token?user=NAME, minting a token for
	// anyone who asks. For local use only.
	DevTokens bool

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
	Logger    *slog.Logger
	// Registry holds the service's metrics; the caller makes it
	// (metrics.NewRegistry) and may serve it too. Required.
	Registry *prometheus.Registry
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
	if c.Heartbeat <= 0 {
		c.Heartbeat = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}
