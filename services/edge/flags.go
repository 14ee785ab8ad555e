package edge

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/parleychat/parley/pkg/server/daemon"
)

// RegisterFlags adds a flag for each limit to fs, each with a PARLEY_*
// environment fallback, starting from DefaultLimits. The edge binary and
// `parley run` share them.
func (l *Limits) RegisterFlags(fs *flag.FlagSet) {
	*l = DefaultLimits()
	rate := func(r *Rate, name, env, help string) {
		if v, ok := os.LookupEnv(env); ok {
			if err := r.Set(v); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v; using %s\n", env, err, r)
			}
		}
		fs.Var(r, name, fmt.Sprintf("%s: N/s, N/m or N/h with an optional :BURST, or off (%s; default %s)", help, env, r))
	}
	count := func(n *int, name, env, help string) {
		fs.IntVar(n, name, daemon.EnvInt(env, *n), fmt.Sprintf("%s; -1: no cap (%s)", help, env))
	}
	fs.BoolFunc("limits-off", "turn every rate limit and connection cap off, for load benchmarks only (PARLEY_LIMITS=off)", func(string) error {
		l.Off = true
		return nil
	})
	l.Off = daemon.Env("PARLEY_LIMITS", "") == "off"
	rate(&l.ConnMessages, "conn-message-rate", "PARLEY_CONN_MESSAGE_RATE", "message frames (send, edit, delete, react) per connection")
	rate(&l.UserMessages, "user-message-rate", "PARLEY_USER_MESSAGE_RATE", "message frames per user on this node")
	rate(&l.ConnRequests, "conn-request-rate", "PARLEY_CONN_REQUEST_RATE", "frames of any kind per connection")
	rate(&l.UserRequests, "user-request-rate", "PARLEY_USER_REQUEST_RATE", "frames of any kind per user on this node")
	rate(&l.GroupOps, "group-op-rate", "PARLEY_GROUP_OP_RATE", "create_conversation, add_member and request_contact frames per user on this node")
	rate(&l.Blocks, "block-rate", "PARLEY_BLOCK_RATE", "block_user frames per user on this node")
	count(&l.ConnsPerUser, "max-conns-per-user", "PARLEY_MAX_CONNS_PER_USER", "connections per user on this node")
	count(&l.ConnsPerIP, "max-conns-per-ip", "PARLEY_MAX_CONNS_PER_IP", "connections per client address on this node")
	fs.IntVar(&l.MaxOutstanding, "max-outstanding", daemon.EnvInt("PARLEY_MAX_OUTSTANDING", l.MaxOutstanding),
		"requests a connection may have unanswered on its socket before the edge stops reading it (PARLEY_MAX_OUTSTANDING)")
	fs.IntVar(&l.QueueBytes, "queue-bytes", daemon.EnvInt("PARLEY_QUEUE_BYTES", l.QueueBytes),
		"bytes queued per connection before it is closed with 4000 resync (PARLEY_QUEUE_BYTES)")
	fs.IntVar(&l.MaxResumeCursors, "max-resume-cursors", daemon.EnvInt("PARLEY_MAX_RESUME_CURSORS", l.MaxResumeCursors),
		"distinct conversations one authenticate may resume (PARLEY_MAX_RESUME_CURSORS)")
	count(&l.ResumeConcurrency, "resume-concurrency", "PARLEY_RESUME_CONCURRENCY", "resumes this node runs at once (more wait their turn; -limits-off keeps it)")
	rate(&l.Handshakes, "handshake-rate", "PARLEY_HANDSHAKE_RATE", "WebSocket upgrades this node starts (more wait their turn; -limits-off keeps it)")
	fs.DurationVar(&l.HandshakeWait, "handshake-wait", daemon.EnvDuration("PARLEY_HANDSHAKE_WAIT", l.HandshakeWait),
		"longest a new connection waits for its turn to upgrade before it is answered 503 with a Retry-After (PARLEY_HANDSHAKE_WAIT)")
	fs.DurationVar(&l.PingInterval, "ping-interval", daemon.EnvDuration("PARLEY_PING_INTERVAL", l.PingInterval),
		"how often the edge pings each authenticated client (PARLEY_PING_INTERVAL)")
	fs.DurationVar(&l.IdleTimeout, "idle-timeout", daemon.EnvDuration("PARLEY_IDLE_TIMEOUT", l.IdleTimeout),
		"close a connection heard nothing from (no frame, pong or ping) for this long (PARLEY_IDLE_TIMEOUT)")
	fs.Func("allowed-origins", "comma-separated Origin host patterns allowed besides the edge's own host, * for any (PARLEY_ALLOWED_ORIGINS)", func(s string) error {
		l.AllowedOrigins = daemon.List(s)
		return nil
	})
	l.AllowedOrigins = daemon.List(daemon.Env("PARLEY_ALLOWED_ORIGINS", ""))
	fs.Func("trusted-proxies", "comma-separated CIDRs of proxies whose X-Forwarded-For names the client (PARLEY_TRUSTED_PROXIES)", func(s string) error {
		p, err := ParsePrefixes(s)
		l.TrustedProxies = p
		return err
	})
	if p, err := ParsePrefixes(daemon.Env("PARLEY_TRUSTED_PROXIES", "")); err != nil {
		fmt.Fprintf(os.Stderr, "PARLEY_TRUSTED_PROXIES: %v; trusting none\n", err)
	} else {
		l.TrustedProxies = p
	}
}

// ParsePrefixes reads comma-separated CIDRs; a bare address is its own
// /32 or /128.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range daemon.List(s) {
		if !strings.Contains(p, "/") {
			a, err := netip.ParseAddr(p)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: %w", p, err)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		pr, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %w", p, err)
		}
		out = append(out, pr.Masked())
	}
	return out, nil
}

// BackendFlags are the backend API's flags, shared by the edge binary and
// `parley run`.
type BackendFlags struct {
	Addr, TokensFile string
	// Rate bounds each service token's calls (edge.Config.BackendRate).
	Rate Rate
}

// Register adds -backend-addr and -backend-tokens-file to fs.
func (f *BackendFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Addr, "backend-addr", daemon.Env("PARLEY_BACKEND_ADDR", ""),
		"backend API (parley.backend.v1) gRPC listen address, for the application's own servers; off if empty (PARLEY_BACKEND_ADDR)")
	fs.StringVar(&f.TokensFile, "backend-tokens-file", daemon.Env("PARLEY_BACKEND_TOKENS_FILE", ""),
		"the service tokens the backend API accepts: one NAME TOKEN per line, tokens of 32 bytes or more (PARLEY_BACKEND_TOKENS_FILE)")
	f.Rate = DefaultBackendRate
	if v, ok := os.LookupEnv("PARLEY_BACKEND_RATE"); ok {
		if err := f.Rate.Set(v); err != nil {
			fmt.Fprintf(os.Stderr, "PARLEY_BACKEND_RATE: %v; using %s\n", err, f.Rate)
		}
	}
	fs.Var(&f.Rate, "backend-rate", fmt.Sprintf("backend API calls per service token: N/s, N/m or N/h with an optional :BURST, or off (PARLEY_BACKEND_RATE; default %s)", f.Rate))
}

// Tokens reads the token file, when the backend API is on.
func (f BackendFlags) Tokens() ([]BackendToken, error) {
	if f.Addr == "" {
		return nil, nil
	}
	if f.TokensFile == "" {
		return nil, fmt.Errorf("-backend-addr %s needs -backend-tokens-file: the backend API serves no caller without a token", f.Addr)
	}
	return LoadBackendTokens(f.TokensFile)
}
