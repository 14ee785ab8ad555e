// Package cluster starts Parley as processes for the tools that measure
// it from outside (parley-bench, parley-chaos): every service as its own
// process on the real stack, n instances of each, or `parley run`
// (embedded Kafka and Pebble) in one process.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/parleychat/parley/pkg/server/freeport"
	"github.com/parleychat/parley/pkg/server/kafkaconf"
	"github.com/parleychat/parley/pkg/server/mtls"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
)

// Roles are the five services, in the order a cluster starts them.
var Roles = []string{"presence", "persistence", "ingest", "fanout", "edge"}

// Config says what to start on the real stack.
type Config struct {
	Brokers   []string
	Cassandra string
	// Keyspace is the Cassandra keyspace persistence writes (migrated on
	// start).
	Keyspace string
	// BinDir holds the service binaries (Build); LogDir gets a log per
	// process.
	BinDir, LogDir string
	// Name prefixes the static consumer-group member ids (and so the
	// sequencer's transactional ids): a tool's own, so its runs never
	// fence another tool's services, and a rerun takes its partitions back
	// at once.
	Name string
	// NodePrefix prefixes edge node ids (Name if empty). Presence state
	// outlives a run on the shared Kafka: a node id of a run of its own
	// does not inherit an earlier run's sessions.
	NodePrefix string
	// Instances of presence, persistence, ingest and fan-out each (1 if
	// 0); presence instances split the users, so it must divide the
	// partition count. Edges is the number of edge processes.
	Instances, Edges int
	// JWTSecret signs the clients' tokens; every edge trusts it.
	JWTSecret string
	// Env is added to every process's environment.
	Env []string
	// Kafka are the TLS and SASL options of the tool's own Kafka clients,
	// and TLS the internal mTLS of its gRPC clients: what the processes
	// read from the same environment (SecurityFromEnv). None for
	// plaintext.
	Kafka []kgo.Opt
	TLS   *mtls.Source
}

// SecurityFromEnv reads what the processes read from the environment
// (stack.sh env exports it): the Kafka TLS and SASL options and the
// internal mTLS files.
func SecurityFromEnv() ([]kgo.Opt, *mtls.Source, error) {
	kafka, err := kafkaconf.FromEnv().Opts()
	if err != nil {
		return nil, nil, err
	}
	src, err := mtls.OpenMutual(mtls.FromEnv(""))
	if err != nil {
		return nil, nil, err
	}
	return kafka, src, nil
}

// Cluster is a running Parley.
type Cluster struct {
	Embedded bool
	Brokers  []string
	// Procs in start order; Stop stops them in reverse.
	Procs []*Proc
	Edges []*Proc
	// roles lists each role's instances; in embedded mode every role is
	// the one `parley run` process.
	roles map[string][]*Proc
	// The gRPC addresses, instance i of each role at index i.
	PersistenceGRPC, IngestGRPC, PresenceGRPC []string
	cfg                                       Config
}

// KafkaOpts reach the cluster's Kafka: topics.ClientOpts with its
// security.
func (c *Cluster) KafkaOpts() []kgo.Opt { return topics.ClientOpts(c.Brokers, c.cfg.Kafka...) }

// DialOption secures a gRPC connection to the cluster's services.
func (c *Cluster) DialOption() grpc.DialOption { return mtls.DialOption(c.cfg.TLS) }

// Role returns the instances of a role (edge, ingest, ...).
func (c *Cluster) Role(role string) []*Proc { return c.roles[role] }

// First returns the first instance of a role, or nil.
func (c *Cluster) First(role string) *Proc {
	if ps := c.roles[role]; len(ps) > 0 {
		return ps[0]
	}
	return nil
}

// WSURL is the WebSocket endpoint of edge i (modulo the edge count).
func (c *Cluster) WSURL(i int) string { return "ws://" + c.Edges[i%len(c.Edges)].HTTPAddr + "/ws" }

// Build builds the service binaries (or the CLI, embedded) into a
// temporary folder with the go command of this toolchain; run it from the
// repository.
func Build(ctx context.Context, embedded bool) (string, error) {
	dir, err := os.MkdirTemp("", "parley-procs-bin-")
	if err != nil {
		return "", err
	}
	pkgs := []string{
		"github.com/parleychat/parley/services/edge/cmd/parley-edge",
		"github.com/parleychat/parley/services/ingest/cmd/parley-ingest",
		"github.com/parleychat/parley/services/fanout/cmd/parley-fanout",
		"github.com/parleychat/parley/services/persistence/cmd/parley-persistence",
		"github.com/parleychat/parley/services/presence/cmd/parley-presence",
	}
	if embedded {
		pkgs = []string{"github.com/parleychat/parley/cmd/parley"}
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build (run from the repository): %w\n%s", err, out)
	}
	return dir, nil
}

// Start provisions the topics and starts cfg.Instances of presence,
// persistence, ingest and fan-out and cfg.Edges edges, each on addresses
// from pkg/freeport, and waits until all are ready. Edge i calls ingest
// and persistence i mod Instances and every presence instance.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg.Instances = max(cfg.Instances, 1)
	if cfg.NodePrefix == "" {
		cfg.NodePrefix = cfg.Name
	}
	c := &Cluster{Brokers: cfg.Brokers, roles: map[string][]*Proc{}, cfg: cfg}
	if err := EnsureTopics(ctx, c.KafkaOpts()); err != nil {
		return nil, err
	}
	brokers := strings.Join(cfg.Brokers, ",")
	n := cfg.Instances
	for _, addrs := range []*[]string{&c.PresenceGRPC, &c.PersistenceGRPC, &c.IngestGRPC} {
		for range n {
			a, err := freeport.Addr()
			if err != nil {
				return nil, err
			}
			*addrs = append(*addrs, a)
		}
	}
	presence := strings.Join(c.PresenceGRPC, ",")
	var err error
	for i := 0; err == nil && i < n; i++ {
		err = errors.Join(
			c.add("presence", i, "-grpc", c.PresenceGRPC[i], "-brokers", brokers,
				"-instance", strconv.Itoa(i), "-instances", strconv.Itoa(n)),
			c.add("ingest", i, "-brokers", brokers, "-grpc", c.IngestGRPC[i], "-instance-id", c.instanceID("ingest", i)),
			c.add("fanout", i, "-brokers", brokers, "-presence", presence, "-instance-id", c.instanceID("fanout", i)),
			// Every instance migrates (idempotent), so a restarted one
			// finds the schema whichever it is; the first is waited for
			// before the others start, so they never race to create it.
			c.add("persistence", i, "-brokers", brokers, "-grpc", c.PersistenceGRPC[i],
				"-instance-id", c.instanceID("persistence", i), "-store", "cassandra", "-cassandra-hosts", cfg.Cassandra,
				"-cassandra-keyspace", cfg.Keyspace, "-migrate"),
		)
	}
	for i := 0; err == nil && i < cfg.Edges; i++ {
		err = c.AddEdge(fmt.Sprintf("edge%d", i))
	}
	if err == nil {
		err = c.startAll(ctx)
	}
	if err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// startAll starts the processes in order, the first persistence alone
// before the rest, and waits until every one is ready.
func (c *Cluster) startAll(ctx context.Context) error {
	first := c.First("persistence")
	if err := first.Start(); err != nil {
		return err
	}
	if err := first.WaitReady(ctx, 3*time.Minute); err != nil {
		return err
	}
	for _, p := range c.Procs {
		if p == first {
			continue
		}
		if err := p.Start(); err != nil {
			return err
		}
	}
	for _, p := range c.Procs {
		if err := p.WaitReady(ctx, 3*time.Minute); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) instanceID(role string, i int) string {
	return fmt.Sprintf("%s-%s-%d", c.cfg.Name, role, i)
}

// add describes instance i of a role, with a health address of its own.
// It is named after the role, and the index when there are several.
func (c *Cluster) add(role string, i int, args ...string) error {
	name := role
	if c.cfg.Instances > 1 {
		name = fmt.Sprintf("%s%d", role, i)
	}
	return c.addNamed(name, role, args...)
}

func (c *Cluster) addNamed(name, role string, args ...string) error {
	httpAddr, err := freeport.Addr()
	if err != nil {
		return err
	}
	args = append(args, "-http", httpAddr)
	adminAddr := httpAddr
	if role == "edge" {
		if adminAddr, err = freeport.Addr(); err != nil {
			return err
		}
		// The tools measure capacity and faults, from one address and at
		// rates no one client would send: the edge's limits stay off.
		args = append(args, "-admin", adminAddr, "-limits-off")
	}
	p := NewProc(name, role, filepath.Join(c.cfg.BinDir, "parley-"+role), httpAddr, c.cfg.LogDir, c.cfg.Env, args...)
	p.AdminAddr = adminAddr
	c.Procs = append(c.Procs, p)
	c.roles[role] = append(c.roles[role], p)
	return nil
}

// AddEdge describes one more edge node, calling ingest and persistence
// instance (edge index mod Instances); Start starts the ones described
// before it, StartEdge the ones after.
func (c *Cluster) AddEdge(name string) error {
	grpcAddr, err := freeport.Addr()
	if err != nil {
		return err
	}
	own := len(c.Edges) % c.cfg.Instances
	if err := c.addNamed(name, "edge", "-grpc", grpcAddr, "-node-id", c.cfg.NodePrefix+"-"+name, "-ingest", c.IngestGRPC[own],
		"-persistence", c.PersistenceGRPC[own], "-presence", strings.Join(c.PresenceGRPC, ","), "-jwt-secret", c.cfg.JWTSecret); err != nil {
		return err
	}
	c.Edges = append(c.Edges, c.Procs[len(c.Procs)-1])
	return nil
}

// StartEdge starts one more edge node on the running services and waits
// until it is ready.
func (c *Cluster) StartEdge(ctx context.Context, name string) (*Proc, error) {
	if err := c.AddEdge(name); err != nil {
		return nil, err
	}
	p := c.Edges[len(c.Edges)-1]
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, p.WaitReady(ctx, time.Minute)
}

// StartEmbedded runs `parley run` (binDir from Build(ctx, true)) on a
// fresh data folder.
func StartEmbedded(ctx context.Context, binDir, logDir, dataDir, secret string, env []string) (*Cluster, error) {
	httpAddr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	kafkaAddr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	_, kport, _ := strings.Cut(kafkaAddr, ":")
	p := NewProc("parley-run", "parley-run", filepath.Join(binDir, "parley"), httpAddr, logDir,
		append([]string{"PARLEY_JWT_SECRET=" + secret}, env...),
		"run", "-data", dataDir, "-http", httpAddr, "-admin", adminAddr, "-kafka-port", kport, "-limits-off")
	p.AdminAddr = adminAddr
	if err := p.Start(); err != nil {
		return nil, err
	}
	c := &Cluster{Embedded: true, Brokers: []string{kafkaAddr}, Procs: []*Proc{p}, Edges: []*Proc{p}, roles: map[string][]*Proc{}}
	for _, role := range Roles {
		c.roles[role] = []*Proc{p}
	}
	if err := p.WaitReady(ctx, 2*time.Minute); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Stop stops every process, the last started first (edges before the
// services they call).
func (c *Cluster) Stop() {
	for i := len(c.Procs) - 1; i >= 0; i-- {
		c.Procs[i].Stop(20 * time.Second)
	}
}

// PIDs are the cluster's current process ids.
func (c *Cluster) PIDs() map[int]bool {
	out := map[int]bool{}
	for _, p := range c.Procs {
		out[p.PID()] = true
	}
	return out
}

// EnsureTopics waits for the broker conn reaches (topics.ClientOpts) and
// creates the topics the services expect (a fresh broker has none).
func EnsureTopics(ctx context.Context, conn []kgo.Opt) error {
	cl, err := kgo.NewClient(conn...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := topics.WaitReady(wctx, cl); err != nil {
		return fmt.Errorf("%w (is the local stack up? make up)", err)
	}
	if err := topics.Ensure(wctx, kadm.NewClient(cl), topics.LocalSpec); err != nil {
		return fmt.Errorf("provision topics: %w", err)
	}
	return nil
}
