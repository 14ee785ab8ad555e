package cassandrastore

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/parleychat/parley/pkg/server/freeport"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/mtls/devcert"
)

// Tests that need no Cassandra.

func TestSplitStatements(t *testing.T) {
	got, err := splitStatements(`
-- a comment; with a semicolon and a quote's apostrophe
CREATE TABLE a (x int PRIMARY KEY) WITH comment = 'semi; colon and ''quotes''';
// another comment
/* block; comment */ INSERT INTO "Odd;Name" (x) VALUES (1);
CREATE FUNCTION f() RETURNS NULL ON NULL INPUT RETURNS int LANGUAGE java AS $$ return 1; $$;
   ;
trailing statement without semicolon`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`CREATE TABLE a (x int PRIMARY KEY) WITH comment = 'semi; colon and ''quotes'''`,
		`INSERT INTO "Odd;Name" (x) VALUES (1)`,
		`CREATE FUNCTION f() RETURNS NULL ON NULL INPUT RETURNS int LANGUAGE java AS $$ return 1; $$`,
		`trailing statement without semicolon`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	for _, bad := range []string{"SELECT 'open", `SELECT "open`, "/* open", "AS $$ open"} {
		if _, err := splitStatements(bad); err == nil {
			t.Errorf("splitStatements(%q): no error", bad)
		}
	}
}

func TestEmbeddedMigrations(t *testing.T) {
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 || all[0].version != 1 {
		t.Fatalf("migrations = %+v, want 0001 first", all)
	}
	for _, m := range all {
		for _, s := range m.statements {
			up := strings.ToUpper(strings.Join(strings.Fields(s), " "))
			idempotent := true
			switch {
			case strings.HasPrefix(up, "CREATE "):
				idempotent = strings.Contains(up, "IF NOT EXISTS")
			case strings.HasPrefix(up, "ALTER TABLE ") && strings.Contains(up, " ADD "):
				idempotent = strings.Contains(up, " ADD IF NOT EXISTS ")
			case strings.HasPrefix(up, "ALTER TABLE ") && strings.Contains(up, " DROP "):
				idempotent = strings.Contains(up, " DROP IF EXISTS ")
			}
			if !idempotent {
				t.Errorf("%s: statement is not idempotent: %.80s", m.name, s)
			}
		}
	}
	// Comments and layout do not count towards the checksum.
	a, _ := splitStatements("CREATE TABLE x (k int PRIMARY KEY);")
	b, _ := splitStatements("-- doc\nCREATE TABLE x (\n    k int PRIMARY KEY\n);\n")
	if checksum(a) != checksum(b) {
		t.Fatal("checksum depends on comments or whitespace")
	}
}

func TestParseConsistency(t *testing.T) {
	for in, want := range map[string]gocql.Consistency{
		"one": gocql.One, "LOCAL_QUORUM": gocql.LocalQuorum, "local-quorum": gocql.LocalQuorum,
		" quorum ": gocql.Quorum, "local_one": gocql.LocalOne, "all": gocql.All, "each_quorum": gocql.EachQuorum,
	} {
		if got, err := ParseConsistency(in); err != nil || got != want {
			t.Errorf("ParseConsistency(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"any", "", "most", "serial"} {
		if _, err := ParseConsistency(bad); err == nil {
			t.Errorf("ParseConsistency(%q): no error", bad)
		}
	}
}

// TestSplitGroups: writes of many partitions share requests of at most
// the group's partitions and groupBytes, in order; a heavy partition goes
// alone, and a group of 1 sends each on its own.
func TestSplitGroups(t *testing.T) {
	units := func(bytes ...int) []unit {
		var out []unit
		for i, b := range bytes {
			out = append(out, unit{bytes: b, what: fmt.Sprint(i)})
		}
		return out
	}
	shape := func(groups [][]unit) string {
		var parts []string
		for _, g := range groups {
			var names []string
			for _, u := range g {
				names = append(names, u.what)
			}
			parts = append(parts, strings.Join(names, ","))
		}
		return strings.Join(parts, " | ")
	}
	for _, c := range []struct {
		name  string
		units []unit
		group int
		want  string
	}{
		{"none", nil, 10, ""},
		{"all in one", units(300, 300, 300), 10, "0,1,2"},
		{"by count", units(10, 10, 10, 10, 10), 2, "0,1 | 2,3 | 4"},
		{"by bytes", units(2000, 2000, 2000), 10, "0,1 | 2"},
		{"heavy alone", units(100, groupBytes+1, 100), 10, "0 | 1 | 2"},
		{"off", units(10, 10), 1, "0 | 1"},
		{"zero is one", units(10, 10), 0, "0 | 1"},
	} {
		if got := shape(split(c.units, c.group)); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	for _, cfg := range []Config{{Hosts: []string{"h"}}, {Hosts: []string{"h"}, GroupPartitions: 3}} {
		got, _, err := cfg.normalized()
		want := cmp.Or(cfg.GroupPartitions, DefaultGroupPartitions)
		if err != nil || got.GroupPartitions != want {
			t.Errorf("GroupPartitions %d normalized to %d, %v; want %d", cfg.GroupPartitions, got.GroupPartitions, err, want)
		}
	}
	if _, _, err := (Config{Hosts: []string{"h"}, GroupPartitions: -1}).normalized(); err == nil {
		t.Error("a negative group was accepted")
	}
}

func TestConfigDefaults(t *testing.T) {
	if _, _, err := (Config{}).normalized(); err == nil {
		t.Error("no hosts: no error")
	}
	cfg, cons, err := Config{Hosts: []string{"127.0.0.1:19042"}}.normalized()
	if err != nil || cfg.Keyspace != DefaultKeyspace || cons != gocql.LocalQuorum || cfg.Timeout != DefaultTimeout || cfg.ReplicationFactor != 1 {
		t.Fatalf("defaults: %+v %v %v", cfg, cons, err)
	}
	for _, ks := range []string{"parley; DROP", "1abc", strings.Repeat("k", 49), `"q"`} {
		if _, _, err := (Config{Hosts: []string{"h"}, Keyspace: ks}).normalized(); err == nil {
			t.Errorf("keyspace %q accepted", ks)
		}
	}
	if got := replication(cfg); got != "{'class': 'SimpleStrategy', 'replication_factor': 1}" {
		t.Errorf("local replication = %s", got)
	}
	cfg.Datacenters, cfg.ReplicationFactor = []string{"dc1", "dc2"}, 3
	if got := replication(cfg); got != "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}" {
		t.Errorf("production replication = %s", got)
	}
	cfg.Datacenters = nil
	cfg.LocalDatacenter = "eu-west"
	if cfg, _, err = cfg.normalized(); err != nil {
		t.Fatal(err)
	}
	if got := replication(cfg); got != "{'class': 'NetworkTopologyStrategy', 'eu-west': 3}" {
		t.Errorf("replication with only a local datacenter = %s", got)
	}
	if _, _, err := (Config{Hosts: []string{"h"}, Password: "p"}).normalized(); err == nil {
		t.Error("a password without a username was accepted")
	}
	if p := commonPort([]string{"a:19042", "b:19042"}); p != 19042 {
		t.Errorf("commonPort = %d", p)
	}
	if p := commonPort([]string{"a:1", "b:2"}); p != 0 {
		t.Errorf("commonPort of mixed ports = %d", p)
	}
}

func TestMemberList(t *testing.T) {
	m := map[int64]string{
		1<<memberPosBits | 0: "bob", 1<<memberPosBits | 1: "alice", 1<<memberPosBits | 2: "bob",
		3 << memberPosBits: "carol", 4 << memberPosBits: "alice",
	}
	if got := memberList(m, nil); !slices.Equal(got, []string{"bob", "alice", "carol"}) {
		t.Fatalf("memberList = %v", got)
	}
	// bob left at 2: his entries up to it are gone; alice left at 3 and
	// came back at 4: she is last.
	if got := memberList(m, map[string]int64{"bob": 2, "alice": 3}); !slices.Equal(got, []string{"carol", "alice"}) {
		t.Fatalf("memberList with leaves = %v", got)
	}
	if memberList(nil, nil) != nil {
		t.Fatal("memberList(nil) is not nil")
	}
}

// TestWaitReachable: a contact point nobody listens on ends the wait at
// the timeout with an error naming it; one that accepts ends it at once.
func TestWaitReachable(t *testing.T) {
	closed, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = WaitReachable(t.Context(), []string{closed}, time.Second)
	if took := time.Since(start); took < time.Second || took > 5*time.Second {
		t.Errorf("gave up after %s, want about 1s", took)
	}
	if err == nil || !strings.Contains(err.Error(), "cassandra at "+closed+" not reachable within 1s") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("err = %v, want it to name %s, the timeout and the refused connection", err, closed)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := WaitReachable(t.Context(), []string{closed, l.Addr().String()}, time.Second); err != nil {
		t.Errorf("with one host listening: %v", err)
	}
}

func TestClusterCarriesLoginAndTLS(t *testing.T) {
	tc := &tls.Config{ServerName: "cassandra.internal"}
	c, err := NewClusterConfig(Config{Hosts: []string{"h:9042"}, Username: "parley", Password: "pw", TLS: tc, LocalDatacenter: "dc1"})
	if err != nil {
		t.Fatal(err)
	}
	auth, ok := c.Authenticator.(gocql.PasswordAuthenticator)
	if !ok || auth.Username != "parley" || auth.Password != "pw" {
		t.Errorf("authenticator = %#v", c.Authenticator)
	}
	if c.SslOpts == nil || c.SslOpts.Config != tc || !c.SslOpts.EnableHostVerification {
		t.Errorf("TLS options = %#v", c.SslOpts)
	}
	plain, err := NewClusterConfig(Config{Hosts: []string{"h"}})
	if err != nil {
		t.Fatal(err)
	}
	if plain.Authenticator != nil || plain.SslOpts != nil {
		t.Errorf("no login or TLS configured, got %#v / %#v", plain.Authenticator, plain.SslOpts)
	}
}

func TestSettingsApply(t *testing.T) {
	dir := t.TempDir()
	if _, err := devcert.Write(dir, devcert.LoopbackHosts, time.Hour); err != nil {
		t.Fatal(err)
	}
	var cfg Config
	s := Settings{Hosts: "a:1, b:1", Username: "u", Password: "p", TLSFiles: mtls.Files{CA: filepath.Join(dir, devcert.CAFile)}, LocalDatacenter: "dc1"}
	if err := s.Apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Hosts, []string{"a:1", "b:1"}) || cfg.Username != "u" || cfg.Password != "p" || cfg.LocalDatacenter != "dc1" || cfg.TLS == nil || cfg.TLS.RootCAs == nil {
		t.Fatalf("applied config %+v", cfg)
	}
	s.TLSFiles.CA = filepath.Join(dir, "missing.crt")
	if err := s.Apply(&cfg); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
}
