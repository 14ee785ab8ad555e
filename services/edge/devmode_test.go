package edge

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/metrics"
)

func TestDevModeRefusedOffLoopback(t *testing.T) {
	strong := []byte("a-real-secret-of-enough-bytes")
	for _, c := range []struct {
		name       string
		cfg        Config
		refuse     bool
		wantInLogs string
	}{
		{name: "dev tokens on every interface", cfg: Config{HTTPAddr: "0.0.0.0:0", JWTSecret: strong, DevTokens: true}, refuse: true},
		{name: "dev secret on every interface", cfg: Config{HTTPAddr: "0.0.0.0:0", JWTSecret: []byte(auth.DevSecret)}, refuse: true},
		{name: "dev tokens with only the push listener exposed", cfg: Config{GRPCAddr: "0.0.0.0:0", JWTSecret: strong, DevTokens: true}, refuse: true},
		{name: "dev tokens exposed with -insecure-dev", cfg: Config{HTTPAddr: "0.0.0.0:0", JWTSecret: strong, DevTokens: true, InsecureDev: true}, wantInLogs: "level=ERROR msg=\"edge: INSECURE: dev tokens"},
		{name: "dev secret and dev tokens on loopback", cfg: Config{JWTSecret: []byte(auth.DevSecret), DevTokens: true}, wantInLogs: "level=WARN msg=\"edge: INSECURE: dev tokens"},
		{name: "a real secret on every interface", cfg: Config{HTTPAddr: "0.0.0.0:0", JWTSecret: strong}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			cfg := c.cfg
			if cfg.HTTPAddr == "" {
				cfg.HTTPAddr = "127.0.0.1:0"
			}
			if cfg.GRPCAddr == "" {
				cfg.GRPCAddr = "127.0.0.1:0"
			}
			// Dialled lazily: nothing is reached in this test.
			cfg.IngestAddr, cfg.PersistenceAddr, cfg.PresenceAddrs = "127.0.0.1:1", "127.0.0.1:1", []string{"127.0.0.1:1"}
			cfg.Registry, cfg.Logger = metrics.NewRegistry(), slog.New(slog.NewTextHandler(&logs, nil))
			s, err := New(cfg)
			if c.refuse {
				if err == nil {
					s.Close()
					t.Fatal("started")
				}
				if !strings.Contains(err.Error(), "-insecure-dev") {
					t.Fatalf("error %q does not say how to override", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if c.wantInLogs == "" {
				if strings.Contains(logs.String(), "INSECURE") {
					t.Fatalf("warned without dev mode: %s", logs.String())
				}
			} else if !strings.Contains(logs.String(), c.wantInLogs) {
				t.Fatalf("logs lack %q:\n%s", c.wantInLogs, logs.String())
			}
		})
	}
}

func TestDevTokensNeedASecret(t *testing.T) {
	_, err := New(Config{HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", JWKSURL: "https://idp.example/jwks.json", DevTokens: true,
		IngestAddr: "127.0.0.1:1", PersistenceAddr: "127.0.0.1:1", PresenceAddrs: []string{"127.0.0.1:1"}, Registry: metrics.NewRegistry()})
	if err == nil || !strings.Contains(err.Error(), "secret") {
		t.Fatalf("dev tokens without a secret: %v", err)
	}
}
