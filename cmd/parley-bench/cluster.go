package main

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

	"github.com/parleychat/parley/pkg/freeport"
	"github.com/parleychat/parley/pkg/topics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// benchSecret signs the benchmark's tokens; the edges it starts trust it.
const benchSecret = "parley-bench-secret-0123456789"

// cluster is the Parley the benchmark measures: every service as its own
// process on the real stack, or `parley run` (embedded Kafka and Pebble).
type cluster struct {
	embedded bool
	brokers  []string
	binDir   string
	logDir   string
	// procs in start order; stopped in reverse.
	procs []*proc
	edges []*proc
	// byRole names the process of each role; in embedded mode every role
	// is the one `parley run` process.
	byRole          map[string]*proc
	persistenceGRPC string
	presenceGRPC    string
	ingestGRPC      string
}

func (c *cluster) wsURL(i int) string { return "ws://" + c.edges[i%len(c.edges)].httpAddr + "/ws" }

// buildBinaries builds the service binaries (or the CLI, embedded) into a
// temporary folder, with the go command of this toolchain.
func buildBinaries(ctx context.Context, embedded bool) (string, error) {
	dir, err := os.MkdirTemp("", "parley-bench-bin-")
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
		return "", fmt.Errorf("go build (run from the repository): %v\n%s", err, out)
	}
	return dir, nil
}

// procEnv is what every started process gets: profiling on, quiet logs.
var procEnv = []string{"PARLEY_PPROF=1", "PARLEY_LOG_LEVEL=warn"}

// startStack starts presence, persistence (Cassandra, keyspace ks), ingest,
// fan-out and n edges as processes on free loopback ports.
func startStack(ctx context.Context, o *options, binDir, logDir string) (*cluster, error) {
	c := &cluster{brokers: strings.Split(o.brokers, ","), binDir: binDir, logDir: logDir, byRole: map[string]*proc{}}
	if err := ensureTopics(ctx, c.brokers); err != nil {
		return nil, err
	}
	var presenceHTTP, persistenceHTTP, ingestHTTP, fanoutHTTP string
	for _, a := range []*string{&c.presenceGRPC, &presenceHTTP, &c.persistenceGRPC, &persistenceHTTP, &c.ingestGRPC, &ingestHTTP, &fanoutHTTP} {
		var err error
		if *a, err = freeport.Addr(); err != nil {
			return nil, err
		}
	}
	start := func(role, bin, httpAddr string, args ...string) error {
		p, err := startProc(role, filepath.Join(binDir, bin), httpAddr, logDir, procEnv, append(args, "-http", httpAddr)...)
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
		c.byRole[role] = p
		return nil
	}
	// Static member ids of their own, so a run never fences (or is fenced
	// by) run-stack.sh or the integration tests, and a rerun takes its
	// partitions back at once.
	err := errors.Join(
		start("presence", "parley-presence", presenceHTTP, "-grpc", c.presenceGRPC, "-brokers", o.brokers),
		start("persistence", "parley-persistence", persistenceHTTP, "-brokers", o.brokers, "-grpc", c.persistenceGRPC,
			"-instance-id", "bench-persistence-0", "-store", "cassandra", "-cassandra-hosts", o.cassandra,
			"-cassandra-keyspace", o.keyspace, "-migrate"),
		start("ingest", "parley-ingest", ingestHTTP, "-brokers", o.brokers, "-grpc", c.ingestGRPC, "-instance-id", "bench-ingest-0"),
		start("fanout", "parley-fanout", fanoutHTTP, "-brokers", o.brokers, "-presence", c.presenceGRPC, "-instance-id", "bench-fanout-0"),
	)
	for i := 0; err == nil && i < o.edges; i++ {
		err = c.startEdge(fmt.Sprintf("edge%d", i))
	}
	if err != nil {
		c.stop()
		return nil, err
	}
	for _, p := range c.procs {
		if err := p.waitReady(ctx, 3*time.Minute); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

// startEdge starts one more edge node on the running services.
func (c *cluster) startEdge(name string) error {
	httpAddr, err := freeport.Addr()
	if err != nil {
		return err
	}
	grpcAddr, err := freeport.Addr()
	if err != nil {
		return err
	}
	p, err := startProc(name, filepath.Join(c.binDir, "parley-edge"), httpAddr, c.logDir, procEnv,
		"-http", httpAddr, "-grpc", grpcAddr, "-node-id", "bench-"+name, "-ingest", c.ingestGRPC,
		"-persistence", c.persistenceGRPC, "-presence", c.presenceGRPC, "-jwt-secret", benchSecret)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	c.edges = append(c.edges, p)
	if c.byRole["edge"] == nil {
		c.byRole["edge"] = p
	}
	return nil
}

// startEmbedded runs `parley run` on a fresh data folder.
func startEmbedded(ctx context.Context, binDir, logDir, dataDir string) (*cluster, error) {
	httpAddr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	kafkaAddr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	_, kport, _ := strings.Cut(kafkaAddr, ":")
	env := append([]string{"PARLEY_JWT_SECRET=" + benchSecret}, procEnv...)
	p, err := startProc("parley-run", filepath.Join(binDir, "parley"), httpAddr, logDir, env,
		"run", "-data", dataDir, "-http", httpAddr, "-kafka-port", kport)
	if err != nil {
		return nil, err
	}
	c := &cluster{embedded: true, brokers: []string{kafkaAddr}, binDir: binDir, logDir: logDir, procs: []*proc{p}, edges: []*proc{p}, byRole: map[string]*proc{}}
	for _, role := range []string{"edge", "ingest", "fanout", "persistence", "presence"} {
		c.byRole[role] = p
	}
	if err := p.waitReady(ctx, 2*time.Minute); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// stop stops every process, the last started first (edges before the
// services they call).
func (c *cluster) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(20 * time.Second)
	}
}

func (c *cluster) pids() map[int]bool {
	out := map[int]bool{}
	for _, p := range c.procs {
		out[p.pid()] = true
	}
	return out
}

func ensureTopics(ctx context.Context, brokers []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
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

// portOf returns the port of host:port, or 0.
func portOf(addr string) int {
	_, p, _ := strings.Cut(addr, ":")
	n, _ := strconv.Atoi(p)
	return n
}
