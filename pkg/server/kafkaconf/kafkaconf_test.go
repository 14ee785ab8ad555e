package kafkaconf_test

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parleychat/parley/pkg/server/kafkaconf"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/mtls/devcert"
	"github.com/parleychat/parley/pkg/server/topics"
)

// secureCluster is a kfake broker that speaks TLS only and wants SASL, with
// the user parley/secret under mechanism; it returns the brokers and the
// CA file.
func secureCluster(t *testing.T, mechanism string) ([]string, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := devcert.Write(dir, devcert.LoopbackHosts, time.Hour); err != nil {
		t.Fatal(err)
	}
	// A server Source without a CA asks clients for no certificate.
	src, err := mtls.Open(mtls.Files{Cert: filepath.Join(dir, devcert.CertFile), Key: filepath.Join(dir, devcert.KeyFile)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(src.ServerConfig()), kfake.EnableSASL(), kfake.Superuser(mechanism, "parley", "secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs(), filepath.Join(dir, devcert.CAFile)
}

func ping(t *testing.T, brokers []string, cfg kafkaconf.Config) error {
	t.Helper()
	sec, err := cfg.Opts()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(topics.ClientOpts(brokers, sec...), kgo.RetryTimeout(2*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return cl.Ping(ctx)
}

func TestTLSAndSASLReachASecuredBroker(t *testing.T) {
	for _, mech := range []string{kafkaconf.ScramSHA512, kafkaconf.ScramSHA256, kafkaconf.Plain} {
		t.Run(mech, func(t *testing.T) {
			brokers, ca := secureCluster(t, mech)
			good := kafkaconf.Config{Files: mtls.Files{CA: ca}, Mechanism: mech, User: "parley", Password: "secret"}
			if err := ping(t, brokers, good); err != nil {
				t.Fatalf("TLS + SASL %s: %v", mech, err)
			}
			wrong := good
			wrong.Password = "not-the-secret"
			if err := ping(t, brokers, wrong); err == nil {
				t.Fatal("a wrong password was accepted")
			}
			if mech != kafkaconf.Plain {
				plaintext := good
				plaintext.Files = mtls.Files{}
				if err := ping(t, brokers, plaintext); err == nil {
					t.Fatal("a plaintext client reached the TLS listener")
				}
			}
			// Without the CA, the broker's development certificate is not
			// trusted.
			untrusted := good
			untrusted.Files, untrusted.TLS = mtls.Files{}, true
			if err := ping(t, brokers, untrusted); err == nil {
				t.Fatal("a broker certificate from an unknown CA was trusted")
			}
		})
	}
}

func TestBadSettingsAreRefused(t *testing.T) {
	for name, cfg := range map[string]kafkaconf.Config{
		"plain without tls":   {Mechanism: kafkaconf.Plain, User: "u", Password: "p"},
		"unknown mechanism":   {Mechanism: "GSSAPI", User: "u", Password: "p"},
		"no password":         {Mechanism: kafkaconf.ScramSHA512, User: "u"},
		"user, no mechanism":  {User: "u", Password: "p"},
		"missing ca file":     {Files: mtls.Files{CA: filepath.Join(os.TempDir(), "parley-no-such-ca.crt")}},
		"cert without key":    {Files: mtls.Files{Cert: "tls.crt"}},
		"scram over tls, bad": {TLS: true, Mechanism: "scram-sha-1", User: "u", Password: "p"},
		"unknown log level":   {LogLevel: "loud"},
	} {
		if _, err := cfg.Opts(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if opts, err := (kafkaconf.Config{}).Opts(); err != nil || len(opts) != 0 {
		t.Fatalf("zero config: %d options, %v; want plaintext", len(opts), err)
	}
}

func TestFlagsAndEnvironmentGiveTheSameSettings(t *testing.T) {
	t.Setenv("PARLEY_KAFKA_TLS", "1")
	t.Setenv("PARLEY_KAFKA_TLS_CA", "/etc/kafka-ca/ca.crt")
	t.Setenv("PARLEY_KAFKA_SASL_MECHANISM", kafkaconf.ScramSHA512)
	t.Setenv("PARLEY_KAFKA_SASL_USER", "parley")
	t.Setenv("PARLEY_KAFKA_SASL_PASSWORD", "from-env")
	t.Setenv("PARLEY_KAFKA_LOG_LEVEL", "info")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c := kafkaconf.Register(fs)
	if err := fs.Parse([]string{"-kafka-sasl-password", "from-flag", "-kafka-tls-server-name", "kafka.internal"}); err != nil {
		t.Fatal(err)
	}
	want := kafkaconf.Config{TLS: true, Files: mtls.Files{CA: "/etc/kafka-ca/ca.crt", ServerName: "kafka.internal"}, Mechanism: kafkaconf.ScramSHA512, User: "parley", Password: "from-flag", LogLevel: "info"}
	if *c != want {
		t.Fatalf("flags: %+v, want %+v", *c, want)
	}
	want.Password, want.Files.ServerName = "from-env", ""
	if got := kafkaconf.FromEnv(); got != want {
		t.Fatalf("environment: %+v, want %+v", got, want)
	}
}

// TestClientLogGoesToSlog: with a log level, franz-go's own lines reach the
// service's logger, tagged; without one, none do.
func TestClientLogGoesToSlog(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		level string
		lines bool
	}{{"", false}, {"none", false}, {"error", false}, {"debug", true}, {"DEBUG", true}} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if err := ping(t, c.ListenAddrs(), kafkaconf.Config{LogLevel: tc.level, Log: log}); err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(buf.String(), "kafka_client=true"); (got > 0) != tc.lines || strings.Count(buf.String(), "\n") != got {
			t.Errorf("level %q: %d client lines of %d (want some: %v):\n%s", tc.level, got, strings.Count(buf.String(), "\n"), tc.lines, buf.String())
		}
	}
}
