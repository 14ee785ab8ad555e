package cassandrastore

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gocql/gocql"
)

// Defaults for the zero values of Config.
const (
	DefaultKeyspace          = "parley"
	DefaultConsistency       = gocql.LocalQuorum
	DefaultTimeout           = 10 * time.Second
	DefaultReplicationFactor = 1
	DefaultBucketSize        = 1000
	// ProtoVersion is the native protocol spoken: Cassandra 3.x to 5.0 all
	// speak v4, and pinning it saves a failed handshake at every connect.
	ProtoVersion = 4
	// migrationTimeout bounds one DDL statement; schema changes are slow on a
	// small box and a timed-out DDL is still applied by the server.
	migrationTimeout = 60 * time.Second
)

// Config says where the store lives and how it talks to Cassandra. The zero
// value of every field but Hosts means its default.
type Config struct {
	// Hosts are contact points, "host:port" (port 9042 when omitted). The
	// driver discovers the other nodes from them.
	Hosts []string
	// Keyspace holds the tables; DefaultKeyspace when empty.
	Keyspace string
	// Consistency is used for every read and write: "one", "local_one",
	// "quorum", "local_quorum" (the default), "each_quorum", "all" and so
	// on, case-insensitive. With RF 3, LOCAL_QUORUM reads and writes overlap,
	// so a read sees every acknowledged write of its datacenter.
	Consistency string
	// Timeout bounds one request on the client side (DefaultTimeout). It
	// also bounds connecting.
	Timeout time.Duration
	// LocalDatacenter, when set, routes requests to that datacenter's
	// replicas first (token aware, DC aware). Set it wherever the keyspace
	// spans several datacenters. With no Datacenters, Migrate creates the
	// keyspace with NetworkTopologyStrategy in this datacenter.
	LocalDatacenter string

	// Username and Password log in with Cassandra's PasswordAuthenticator;
	// none when Username is empty.
	Username, Password string
	// TLS, when set, encrypts every connection; each node's certificate is
	// checked against its roots and the node's address (ServerName, when
	// set, instead).
	TLS *tls.Config

	// ReplicationFactor and Datacenters are only used by Migrate, and only
	// when it creates the keyspace; an existing keyspace is left alone.
	//
	// With no Datacenters the keyspace uses SimpleStrategy with
	// ReplicationFactor replicas (DefaultReplicationFactor, 1, which is what
	// the single-node local stack and the tests need). Production lists its
	// datacenters, which gives NetworkTopologyStrategy with
	// ReplicationFactor replicas in each, and uses 3 there:
	//
	//	CREATE KEYSPACE parley WITH replication =
	//	  {'class': 'NetworkTopologyStrategy', 'dc1': 3};
	//
	// together with LOCAL_QUORUM (the default Consistency) and
	// LocalDatacenter. Operators who manage keyspaces themselves (K8ssandra,
	// a DBA) create it like that before the first Migrate.
	ReplicationFactor int
	Datacenters       []string

	// BucketSize is how many events of one conversation share a history
	// partition: event seq s lives in bucket (s-1)/BucketSize, so partitions
	// stay bounded however long a conversation grows (1,000 events of a few
	// hundred bytes is well under a megabyte). It is part of the data layout:
	// Migrate records it in the keyspace the first time, and Open refuses a
	// different value later. 0 means the recorded value, or
	// DefaultBucketSize for a new keyspace.
	BucketSize int

	// GroupPartitions is how many partitions' writes one request carries
	// at most, in one unlogged batch (DefaultGroupPartitions when 0; 1
	// sends each partition's writes on its own). Fewer requests cost less
	// on both sides; on a large cluster a batch spanning partitions makes
	// its coordinator forward most of them, which 1 avoids.
	GroupPartitions int

	// Now is the clock change times (history.ListQuery.ChangedSince) are
	// measured with; time.Now when nil. Every persistence instance's clock
	// counts, so they should agree (NTP) well within history.ChangeLag.
	Now func() time.Time

	// Metrics, when set, times and counts every request of the sessions
	// made with this Config (NewQueryMetrics).
	Metrics *QueryMetrics
}

// keyspaceName is what CQL accepts as an unquoted identifier; the name is
// spliced into DDL, so nothing else gets through.
var keyspaceName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,47}$`)

// normalized checks cfg and fills in the defaults.
func (cfg Config) normalized() (Config, gocql.Consistency, error) {
	if len(cfg.Hosts) == 0 {
		return cfg, 0, fmt.Errorf("cassandra: no hosts configured")
	}
	if cfg.Keyspace == "" {
		cfg.Keyspace = DefaultKeyspace
	}
	if !keyspaceName.MatchString(cfg.Keyspace) {
		return cfg, 0, fmt.Errorf("cassandra: keyspace name %q is not a plain CQL identifier (letters, digits, _; at most 48)", cfg.Keyspace)
	}
	cons := DefaultConsistency
	if cfg.Consistency != "" {
		var err error
		if cons, err = ParseConsistency(cfg.Consistency); err != nil {
			return cfg, 0, err
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ReplicationFactor <= 0 {
		cfg.ReplicationFactor = DefaultReplicationFactor
	}
	if cfg.GroupPartitions < 0 {
		return cfg, 0, fmt.Errorf("cassandra: group of %d partitions per request is negative", cfg.GroupPartitions)
	}
	if cfg.GroupPartitions == 0 {
		cfg.GroupPartitions = DefaultGroupPartitions
	}
	if cfg.BucketSize < 0 {
		return cfg, 0, fmt.Errorf("cassandra: bucket size %d is negative", cfg.BucketSize)
	}
	if len(cfg.Datacenters) == 0 && cfg.LocalDatacenter != "" {
		cfg.Datacenters = []string{cfg.LocalDatacenter}
	}
	if cfg.Username == "" && cfg.Password != "" {
		return cfg, 0, fmt.Errorf("cassandra: a password is set but no username")
	}
	for _, dc := range cfg.Datacenters {
		if dc == "" || strings.ContainsAny(dc, `'\`) {
			return cfg, 0, fmt.Errorf("cassandra: datacenter name %q is not usable", dc)
		}
	}
	return cfg, cons, nil
}

// ParseConsistency reads a consistency level such as "one", "quorum" or
// "local_quorum" (any case; '-' may stand for '_'). ANY is refused: reads
// cannot use it and a write acknowledged at ANY may exist only as a hint.
func ParseConsistency(s string) (gocql.Consistency, error) {
	name := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	if name == "ANY" {
		return 0, fmt.Errorf("cassandra: consistency ANY is not allowed (reads cannot use it and writes at ANY are not durable)")
	}
	var c gocql.Consistency
	if err := c.UnmarshalText([]byte(name)); err != nil {
		return 0, fmt.Errorf("cassandra: unknown consistency %q (want one, local_one, quorum, local_quorum, each_quorum, all, two, three)", s)
	}
	return c, nil
}

// cluster builds the driver configuration; keyspace may be empty for the
// administrative session that creates the keyspace.
func cluster(cfg Config, cons gocql.Consistency, keyspace string, timeout time.Duration) *gocql.ClusterConfig {
	c := gocql.NewCluster(cfg.Hosts...)
	c.ProtoVersion = ProtoVersion
	c.Keyspace = keyspace
	c.Consistency = cons
	c.Timeout = timeout
	c.ConnectTimeout = cfg.Timeout
	// Peers found through system.peers are dialled on c.Port; use the port
	// the contact points agree on.
	if p := commonPort(cfg.Hosts); p != 0 {
		c.Port = p
	}
	if cfg.LocalDatacenter != "" {
		c.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(gocql.DCAwareRoundRobinPolicy(cfg.LocalDatacenter))
	} else {
		c.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(gocql.RoundRobinHostPolicy())
	}
	// Every statement this package sends is idempotent, so a failed attempt
	// may go to the next replica.
	c.RetryPolicy = &gocql.SimpleRetryPolicy{NumRetries: 2}
	c.DefaultIdempotence = true
	// gocql holds each outgoing frame up to 200 µs by default, hoping to
	// coalesce writes. Measured here against the local Cassandra 5.0 on 2
	// cores, that made a trivial query take 1.7 ms instead of 0.26 ms, and
	// did not help Apply either (76k vs 93k events/s): off.
	c.WriteCoalesceWaitTime = 0
	c.ReconnectionPolicy = &gocql.ExponentialReconnectionPolicy{MaxRetries: 10, InitialInterval: 200 * time.Millisecond, MaxInterval: 5 * time.Second}
	// Once those retries are spent a host counts as down until the next
	// periodic check (gocql's default is 60 s): history would stay
	// unavailable for up to a minute after Cassandra is back.
	c.ReconnectInterval = 5 * time.Second
	if cfg.Metrics != nil {
		c.QueryObserver, c.BatchObserver = cfg.Metrics, cfg.Metrics
	}
	if cfg.Username != "" {
		c.Authenticator = gocql.PasswordAuthenticator{Username: cfg.Username, Password: cfg.Password}
	}
	if cfg.TLS != nil {
		// gocql names each node's address as the server name to verify
		// when the configuration leaves it empty and verification on.
		c.SslOpts = &gocql.SslOptions{Config: cfg.TLS, EnableHostVerification: !cfg.TLS.InsecureSkipVerify}
	}
	return c
}

// NewClusterConfig is the driver configuration the store uses, for tools
// and tests that need a session of their own (dropping a keyspace, say)
// with the same contact points, credentials and TLS.
func NewClusterConfig(cfg Config) (*gocql.ClusterConfig, error) {
	cfg, cons, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	return cluster(cfg, cons, "", cfg.Timeout), nil
}

// WaitReachable waits until one of hosts ("host:port", port 9042 when
// omitted) accepts a connection, for at most timeout (ctx alone bounds it
// if timeout is not positive). The driver gives up at the first refused
// connection, while Cassandra opens its native port only once it can
// serve: this waits out a node that is still starting, and ends a wrong
// address in an error naming it. When ctx ends first it returns ctx's
// error.
func WaitReachable(ctx context.Context, hosts []string, timeout time.Duration) error {
	if len(hosts) == 0 {
		return fmt.Errorf("cassandra: no hosts configured")
	}
	wctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var d net.Dialer
	var last error
	for {
		for _, h := range hosts {
			addr := h
			if _, _, err := net.SplitHostPort(h); err != nil {
				addr = net.JoinHostPort(h, "9042")
			}
			c, err := d.DialContext(wctx, "tcp", addr)
			if err == nil {
				c.Close()
				return nil
			}
			// A dial that the deadline cut short says less than the
			// refusal before it.
			if last == nil || wctx.Err() == nil {
				last = err
			}
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("cassandra at %s not reachable within %s: %w", strings.Join(hosts, ","), timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// commonPort is the port every host names, or 0.
func commonPort(hosts []string) int {
	port := 0
	for _, h := range hosts {
		_, p, err := net.SplitHostPort(h)
		if err != nil {
			return 0
		}
		n, err := strconv.Atoi(p)
		if err != nil || (port != 0 && n != port) {
			return 0
		}
		port = n
	}
	return port
}
