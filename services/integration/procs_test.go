package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/parleychat/parley/pkg/sdk"
	"github.com/parleychat/parley/pkg/server/auth"
	"github.com/parleychat/parley/pkg/server/freeport"
	"github.com/parleychat/parley/pkg/server/kafkaconf"
	"github.com/parleychat/parley/pkg/server/topics"
	"github.com/parleychat/parley/services/persistence/history/cassandrastore"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// stack is the real infrastructure the test runs on.
type stack struct {
	brokers, cassandra string
	// env is added to the environment of every service process a cluster
	// starts (after the test's own, so it wins).
	env []string
}

func requireStack(t testing.TB) stack {
	t.Helper()
	s := stack{brokers: os.Getenv("PARLEY_KAFKA_BROKERS"), cassandra: os.Getenv("PARLEY_CASSANDRA_HOSTS")}
	if s.brokers == "" || s.cassandra == "" {
		msg := "PARLEY_KAFKA_BROKERS and PARLEY_CASSANDRA_HOSTS are not set: run `make up` and `eval $(bash deployments/local/stack.sh env)`"
		if os.Getenv("PARLEY_INTEGRATION") == "require" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return s
}

// kafka reaches the stack's Kafka with its TLS and SASL, when it has them
// (stack.sh env exports them; the services read the same variables).
func (s stack) kafka() []kgo.Opt {
	return topics.ClientOpts(strings.Split(s.brokers, ","), kafkaconf.MustEnv()...)
}

// cassandraConfig reaches the stack's Cassandra with its login and TLS.
func (s stack) cassandraConfig(t testing.TB, keyspace string) cassandrastore.Config {
	t.Helper()
	cfg := cassandrastore.Config{Keyspace: keyspace}
	set := cassandrastore.SettingsFromEnv()
	set.Hosts = s.cassandra
	if err := set.Apply(&cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds every service binary once per test process.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "parley-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/",
			"github.com/parleychat/parley/services/edge/cmd/parley-edge",
			"github.com/parleychat/parley/services/ingest/cmd/parley-ingest",
			"github.com/parleychat/parley/services/fanout/cmd/parley-fanout",
			"github.com/parleychat/parley/services/persistence/cmd/parley-persistence",
			"github.com/parleychat/parley/services/presence/cmd/parley-presence")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// proc is one service process.
type proc struct {
	t       *testing.T
	name    string
	bin     string
	args    []string
	env     []string
	health  string
	logPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
}

func (p *proc) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
}

func (p *proc) waitReady(timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			p.t.Fatalf("%s exited during startup:\n%s", p.name, p.tail())
		default:
		}
		resp, err := http.Get("http://" + p.health + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("%s not ready in %s:\n%s", p.name, timeout, p.tail())
}

// kill9 kills the process without letting it clean up.
func (p *proc) kill9() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// stop sends SIGTERM and waits for a graceful exit.
func (p *proc) stop() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		p.t.Errorf("%s did not stop in 20s after SIGTERM", p.name)
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (p *proc) tail() string {
	data, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// cluster is every Parley service as its own process: presence,
// persistence (Cassandra), ingest, fan-out and two edges.
type cluster struct {
	t           *testing.T
	stack       stack
	procs       map[string]*proc
	edgeURLs    []string
	minter      *auth.HS256
	keyspace    string
	startedTook time.Duration
	// logs is the folder of the processes' logs; the addresses are what a
	// process added later (addIngest, addEdge) needs.
	logs                                      string
	presenceAddr, persistenceAddr, ingestAddr string
}

const secret = "integration-secret-0123456789"

func startCluster(t *testing.T, s stack) *cluster {
	t.Helper()
	return startClusterWith(t, s)
}

// startClusterWith starts the cluster with extra flags for both edges.
func startClusterWith(t *testing.T, s stack, edgeArgs ...string) *cluster {
	t.Helper()
	return startClusterEdges(t, s, [2][]string{edgeArgs, edgeArgs})
}

// startClusterEdges starts the cluster with extra flags for each edge, so
// a test can make one edge unusual while the other serves its helpers.
func startClusterEdges(t *testing.T, s stack, edgeArgs [2][]string) *cluster {
	t.Helper()
	return startClusterLease(t, s, edgeArgs, 5*time.Second)
}

// startClusterLease starts the cluster with the given presence lease: how
// long an edge may stay silent before its sessions end.
func startClusterLease(t *testing.T, s stack, edgeArgs [2][]string, lease time.Duration) *cluster {
	t.Helper()
	bin := binaries(t)
	logs := t.TempDir()
	c := &cluster{t: t, stack: s, procs: map[string]*proc{}, logs: logs, keyspace: "parley_it_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")}
	c.minter, _ = auth.NewHS256([]byte(secret))
	add := func(name, binary string, args ...string) *proc { return c.add(bin, name, binary, args...) }
	// A freshly formatted broker has no topics; the services expect them,
	// as in production where `parley topics` or the chart's hook made them.
	ensureTopics(t, s.brokers)
	// Two presence instances split the users (LocalSpec's 8 partitions).
	presenceAddrs := []string{freeAddr(t), freeAddr(t)}
	presenceAddr, persistenceAddr, ingestAddr := strings.Join(presenceAddrs, ","), freeAddr(t), freeAddr(t)
	c.presenceAddr, c.persistenceAddr, c.ingestAddr = presenceAddr, persistenceAddr, ingestAddr
	start := time.Now()
	for i, a := range presenceAddrs {
		add(fmt.Sprintf("presence%d", i), "parley-presence", "-grpc", a, "-brokers", s.brokers,
			"-instance", strconv.Itoa(i), "-instances", strconv.Itoa(len(presenceAddrs)), "-lease", lease.String()).start()
	}
	add("persistence", "parley-persistence", "-brokers", s.brokers, "-grpc", persistenceAddr, "-instance-id", "persistence-0",
		"-store", "cassandra", "-cassandra-hosts", s.cassandra, "-cassandra-keyspace", c.keyspace, "-migrate",
		// Sync tokens reach back 1 s, so tests can check "unchanged" soon.
		"-sync-margin", "1s").start()
	add("ingest", "parley-ingest", "-brokers", s.brokers, "-grpc", ingestAddr, "-instance-id", "ingest-0").start()
	add("fanout", "parley-fanout", "-brokers", s.brokers, "-presence", presenceAddr, "-instance-id", "fanout-0").start()
	for i := range 2 {
		name := fmt.Sprintf("edge%d", i)
		e := add(name, "parley-edge", "-grpc", freeAddr(t), "-node-id", c.nodeID(name),
			"-ingest", ingestAddr, "-persistence", persistenceAddr, "-presence", presenceAddr, "-jwt-secret", secret)
		// The edge serves its probes and metrics on -admin (health here),
		// the WebSocket on -http. The tests drive the pipeline from one
		// address at rates no client would send: the limits stay off
		// (services/platform tests them).
		public := freeAddr(t)
		e.args = e.args[:len(e.args)-2]
		e.args = append(append(e.args, edgeArgs[i]...), "-http", public, "-admin", e.health, "-limits-off")
		e.start()
		c.edgeURLs = append(c.edgeURLs, "ws://"+public+"/ws")
	}
	t.Cleanup(func() {
		for _, name := range []string{"edge0", "edge1", "ingest", "fanout", "persistence", "presence0", "presence1"} {
			c.procs[name].stop()
		}
		for name, p := range c.procs {
			if strings.HasPrefix(name, "extra-") {
				p.stop()
			}
		}
		dropKeyspace(t, s.cassandra, c.keyspace)
		if t.Failed() {
			for name, p := range c.procs {
				t.Logf("---- %s log (last lines) ----\n%s", name, p.tail())
			}
		}
	})
	for _, p := range c.procs {
		p.waitReady(90 * time.Second)
	}
	c.startedTook = time.Since(start)
	t.Logf("six processes ready in %s", c.startedTook)
	return c
}

// dropKeyspace removes a test's keyspace: the stack's data outlives CI
// runs on the same machine, and hundreds of leftover keyspaces slow
// Cassandra down for everyone.
// add registers a process of the cluster, serving health on an address of
// its own.
func (c *cluster) add(bin, name, binary string, args ...string) *proc {
	p := &proc{t: c.t, name: name, bin: filepath.Join(bin, binary), health: freeAddr(c.t), logPath: filepath.Join(c.logs, name+".log")}
	p.args = append(args, "-http", p.health)
	p.env = append([]string{"PARLEY_LOG_LEVEL=info"}, c.stack.env...)
	c.procs[name] = p
	return p
}

// nodeID names an edge node uniquely across clusters: presence state
// outlives a cluster on the shared Kafka, and a node id reused by the next
// test would inherit the last one's sessions until its first snapshot.
func (c *cluster) nodeID(name string) string {
	return name + "-" + strings.TrimPrefix(c.keyspace, "parley_it_")
}

// addIngest starts another ingest node (named "extra-<name>", stopped with
// the cluster) and returns its gRPC address.
func (c *cluster) addIngest(name string) string {
	c.t.Helper()
	addr := freeAddr(c.t)
	p := c.add(binaries(c.t), "extra-"+name, "parley-ingest", "-brokers", c.stack.brokers, "-grpc", addr, "-instance-id", name)
	p.start()
	p.waitReady(60 * time.Second)
	return addr
}

// addEdge starts another edge calling the given ingest and returns its
// index for dial.
func (c *cluster) addEdge(name, ingestAddr string) int {
	c.t.Helper()
	public := freeAddr(c.t)
	p := c.add(binaries(c.t), "extra-"+name, "parley-edge", "-grpc", freeAddr(c.t), "-node-id", c.nodeID(name),
		"-ingest", ingestAddr, "-persistence", c.persistenceAddr, "-presence", c.presenceAddr, "-jwt-secret", secret)
	p.args = p.args[:len(p.args)-2]
	p.args = append(p.args, "-http", public, "-admin", p.health, "-limits-off")
	p.start()
	p.waitReady(60 * time.Second)
	c.edgeURLs = append(c.edgeURLs, "ws://"+public+"/ws")
	return len(c.edgeURLs) - 1
}

func dropKeyspace(t *testing.T, hosts, keyspace string) {
	cfg := stack{cassandra: hosts}.cassandraConfig(t, "")
	cfg.Timeout = 60 * time.Second
	cl, err := cassandrastore.NewClusterConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := cl.CreateSession()
	if err != nil {
		t.Logf("drop keyspace %s: %v", keyspace, err)
		return
	}
	defer sess.Close()
	if err := sess.Query("DROP KEYSPACE IF EXISTS " + keyspace).Exec(); err != nil {
		t.Logf("drop keyspace %s: %v", keyspace, err)
	}
}

func ensureTopics(t *testing.T, brokers string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(stack{brokers: brokers}.kafka()...)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	defer cl.Close()
	if err := topics.WaitReady(ctx, cl); err != nil {
		t.Fatal(err)
	}
	if err := topics.Ensure(ctx, kadm.NewClient(cl), topics.LocalSpec); err != nil {
		t.Fatalf("create topics: %v", err)
	}
}

func (c *cluster) dial(edge int, user, device string) *sdk.Client {
	c.t.Helper()
	return c.dialBuffered(edge, user, device, 0)
}

// dialBuffered dials a device whose SDK holds up to events pushed events
// unread (the SDK's default when 0). A test that reads its device's
// events only after the load must hold them all: past the bound the SDK
// stops reading the socket, pongs go unanswered, and the edge ends the
// connection (CI saw that with 5,050 events against the default 4,096).
func (c *cluster) dialBuffered(edge int, user, device string, events int) *sdk.Client {
	c.t.Helper()
	tok, _ := c.minter.Mint(user, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := sdk.Dial(ctx, sdk.Options{URL: c.edgeURLs[edge], Token: tok, DeviceID: device, EventBuffer: events})
	if err != nil {
		c.t.Fatalf("dial edge%d as %s: %v", edge, user, err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}
