package cassandrastore

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/parleychat/parley/pkg/server/daemon"
	"github.com/parleychat/parley/pkg/server/mtls"
)

// Settings are Config's connection settings as flags and environment
// variables carry them: contact points, login, TLS files and the local
// datacenter. Every Cassandra client of Parley (persistence, the tools,
// the tests) builds its Config from them, so a setting applies to all.
type Settings struct {
	Hosts              string
	Username, Password string
	// TLS turns TLS on; naming any of TLSFiles does too.
	TLS             bool
	TLSFiles        mtls.Files
	LocalDatacenter string
}

// Register adds -cassandra-hosts, -cassandra-username,
// -cassandra-password, -cassandra-tls*, -cassandra-local-dc to fs, each
// with a PARLEY_CASSANDRA_* environment fallback.
func Register(fs *flag.FlagSet) *Settings {
	s := &Settings{}
	fs.StringVar(&s.Hosts, "cassandra-hosts", daemon.Env("PARLEY_CASSANDRA_HOSTS", "127.0.0.1:9042"), "Cassandra contact points, host:port, comma-separated (PARLEY_CASSANDRA_HOSTS)")
	fs.StringVar(&s.Username, "cassandra-username", daemon.Env("PARLEY_CASSANDRA_USERNAME", ""), "Cassandra user (PasswordAuthenticator); none if empty (PARLEY_CASSANDRA_USERNAME)")
	fs.StringVar(&s.Password, "cassandra-password", daemon.Env("PARLEY_CASSANDRA_PASSWORD", ""), "Cassandra password; prefer the environment variable, which ps does not show (PARLEY_CASSANDRA_PASSWORD)")
	fs.BoolVar(&s.TLS, "cassandra-tls", envBool("PARLEY_CASSANDRA_TLS"), "connect to Cassandra over TLS (PARLEY_CASSANDRA_TLS=1; implied by -cassandra-tls-ca/-cert)")
	mtls.Register(fs, &s.TLSFiles, "cassandra-", "CASSANDRA_", "Cassandra")
	fs.StringVar(&s.LocalDatacenter, "cassandra-local-dc", daemon.Env("PARLEY_CASSANDRA_LOCAL_DC", ""), "datacenter whose replicas serve first; -migrate creates the keyspace with NetworkTopologyStrategy there (PARLEY_CASSANDRA_LOCAL_DC)")
	return s
}

// SettingsFromEnv reads the same settings as Register from the environment
// only, for tools and tests that connect next to configured services.
func SettingsFromEnv() Settings {
	return Settings{
		Hosts:           os.Getenv("PARLEY_CASSANDRA_HOSTS"),
		Username:        os.Getenv("PARLEY_CASSANDRA_USERNAME"),
		Password:        os.Getenv("PARLEY_CASSANDRA_PASSWORD"),
		TLS:             envBool("PARLEY_CASSANDRA_TLS"),
		TLSFiles:        mtls.FromEnv("CASSANDRA_"),
		LocalDatacenter: os.Getenv("PARLEY_CASSANDRA_LOCAL_DC"),
	}
}

// Apply fills cfg's connection fields from s, reading the TLS files.
func (s Settings) Apply(cfg *Config) error {
	cfg.Hosts = daemon.List(s.Hosts)
	cfg.Username, cfg.Password = s.Username, s.Password
	cfg.LocalDatacenter = s.LocalDatacenter
	cfg.TLS = nil
	if s.TLS || s.TLSFiles.Enabled() {
		src, err := mtls.Open(s.TLSFiles)
		if err != nil {
			return fmt.Errorf("cassandra: %w", err)
		}
		// The CA is read now; the client certificate again whenever its
		// files change.
		if cfg.TLS, err = src.ClientConfig(""); err != nil {
			return fmt.Errorf("cassandra: %w", err)
		}
	}
	return nil
}

func envBool(key string) bool {
	switch strings.ToLower(os.Getenv(key)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}
