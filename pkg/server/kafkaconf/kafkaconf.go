// Package kafkaconf is how every Parley Kafka client authenticates: TLS
// (with the cluster's CA, and a client certificate when the cluster wants
// one) and SASL (SCRAM-SHA-512, SCRAM-SHA-256, or PLAIN over TLS). The
// services, `parley topics` and the test tools all take their options
// from here, so a setting applies to every connection.
package kafkaconf

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/mtls"
)

// SASL mechanisms.
const (
	ScramSHA512 = "SCRAM-SHA-512"
	ScramSHA256 = "SCRAM-SHA-256"
	Plain       = "PLAIN"
)

// Config is the security of Kafka connections; the zero value is plaintext
// without authentication.
type Config struct {
	// TLS turns TLS on; naming any of Files does too.
	TLS bool
	// Files are the CA the brokers are checked against (the system roots
	// when empty) and the client certificate, if the brokers want one.
	Files mtls.Files
	// Mechanism is the SASL mechanism, empty for none.
	Mechanism      string
	User, Password string
	// LogLevel is how much of franz-go's own log the clients write: none
	// (or empty), error, warn, info or debug. Its info level tells a
	// transaction's and a group session's steps (one line or more per
	// batch), which is what a broker restart's aftermath needs and too
	// much to keep on.
	LogLevel string
	// Log receives those lines (text on stderr when nil); they pass its
	// handler's level too.
	Log *slog.Logger
}

// Register adds the -kafka-tls*, -kafka-sasl-* flags to fs, each with a
// PARLEY_KAFKA_* environment fallback.
func Register(fs *flag.FlagSet) *Config {
	c := &Config{}
	fs.BoolVar(&c.TLS, "kafka-tls", envBool("PARLEY_KAFKA_TLS"), "connect to Kafka over TLS (PARLEY_KAFKA_TLS=1; implied by -kafka-tls-ca/-cert)")
	mtls.Register(fs, &c.Files, "kafka-", "KAFKA_", "Kafka")
	fs.StringVar(&c.Mechanism, "kafka-sasl-mechanism", daemon.Env("PARLEY_KAFKA_SASL_MECHANISM", ""), "SASL mechanism: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (TLS only); none if empty (PARLEY_KAFKA_SASL_MECHANISM)")
	fs.StringVar(&c.User, "kafka-sasl-user", daemon.Env("PARLEY_KAFKA_SASL_USER", ""), "SASL user name (PARLEY_KAFKA_SASL_USER)")
	fs.StringVar(&c.LogLevel, "kafka-log-level", daemon.Env("PARLEY_KAFKA_LOG_LEVEL", ""), "franz-go's own log: none, error, warn, info (a transaction's steps, one line or more per batch) or debug; none if empty (PARLEY_KAFKA_LOG_LEVEL)")
	fs.StringVar(&c.Password, "kafka-sasl-password", daemon.Env("PARLEY_KAFKA_SASL_PASSWORD", ""), "SASL password; prefer the environment variable, which ps does not show (PARLEY_KAFKA_SASL_PASSWORD)")
	return c
}

// FromEnv reads the same settings as Register from the environment only,
// for tools and tests that connect next to configured services.
func FromEnv() Config {
	return Config{
		TLS:       envBool("PARLEY_KAFKA_TLS"),
		Files:     mtls.FromEnv("KAFKA_"),
		Mechanism: os.Getenv("PARLEY_KAFKA_SASL_MECHANISM"),
		User:      os.Getenv("PARLEY_KAFKA_SASL_USER"),
		Password:  os.Getenv("PARLEY_KAFKA_SASL_PASSWORD"),
		LogLevel:  os.Getenv("PARLEY_KAFKA_LOG_LEVEL"),
	}
}

// MustEnv is FromEnv's options, panicking on a bad setting: for tests and
// tools, where that is a setup error.
func MustEnv() []kgo.Opt {
	opts, err := FromEnv().Opts()
	if err != nil {
		panic(err)
	}
	return opts
}

func envBool(key string) bool {
	switch strings.ToLower(os.Getenv(key)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// Opts are the franz-go options for c: a TLS dialer and a SASL mechanism,
// or none for plaintext. The TLS files are read again when they change,
// at the next connection.
func (c Config) Opts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	level, err := parseLogLevel(c.LogLevel)
	if err != nil {
		return nil, err
	}
	if level != kgo.LogLevelNone {
		log := c.Log
		if log == nil {
			log = slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
		opts = append(opts, kgo.WithLogger(clientLog{log: log.With("kafka_client", true), level: level}))
	}
	tlsOn := c.TLS || c.Files.Enabled()
	if tlsOn {
		src, err := mtls.Open(c.Files)
		if err != nil {
			return nil, fmt.Errorf("kafka: %w", err)
		}
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		opts = append(opts, kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
			return src.Dial(ctx, d, network, host)
		}))
	}
	mech := strings.ToUpper(strings.TrimSpace(c.Mechanism))
	if mech != "" && (c.User == "" || c.Password == "") {
		return nil, fmt.Errorf("kafka: SASL %s needs a user and a password", mech)
	}
	switch mech {
	case "":
		if c.User != "" {
			return nil, errors.New("kafka: a SASL user is set but no mechanism (-kafka-sasl-mechanism)")
		}
	case ScramSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.User, Pass: c.Password}.AsSha512Mechanism()))
	case ScramSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: c.User, Pass: c.Password}.AsSha256Mechanism()))
	case Plain:
		// PLAIN sends the password as it is: never without TLS.
		if !tlsOn {
			return nil, errors.New("kafka: SASL PLAIN sends the password in clear and needs TLS (-kafka-tls)")
		}
		opts = append(opts, kgo.SASL(plain.Auth{User: c.User, Pass: c.Password}.AsMechanism()))
	default:
		return nil, fmt.Errorf("kafka: unknown SASL mechanism %q (want %s, %s or %s)", c.Mechanism, ScramSHA512, ScramSHA256, Plain)
	}
	return opts, nil
}

func parseLogLevel(s string) (kgo.LogLevel, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "none":
		return kgo.LogLevelNone, nil
	case "error":
		return kgo.LogLevelError, nil
	case "warn":
		return kgo.LogLevelWarn, nil
	case "info":
		return kgo.LogLevelInfo, nil
	case "debug":
		return kgo.LogLevelDebug, nil
	}
	return kgo.LogLevelNone, fmt.Errorf("kafka: unknown client log level %q (want none, error, warn, info or debug)", s)
}

// clientLog writes franz-go's log to slog, from its own level up.
type clientLog struct {
	log   *slog.Logger
	level kgo.LogLevel
}

func (l clientLog) Level() kgo.LogLevel { return l.level }

func (l clientLog) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		lv = slog.LevelError
	case kgo.LogLevelWarn:
		lv = slog.LevelWarn
	case kgo.LogLevelInfo:
		lv = slog.LevelInfo
	}
	l.log.Log(context.Background(), lv, msg, keyvals...)
}
