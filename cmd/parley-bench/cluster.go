package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/parleychat/parley/cmd/internal/cluster"
)

// benchSecret signs the benchmark's tokens; the edges it starts trust it.
const benchSecret = "parley-bench-secret-0123456789"

// procEnv is what every started process gets: profiling on, quiet logs
// (BENCH_LOG_LEVEL=info or debug to study a run).
var procEnv = []string{"PARLEY_PPROF=1", "PARLEY_LOG_LEVEL=" + env("BENCH_LOG_LEVEL", "warn")}

// startStack starts presence, persistence (Cassandra, keyspace
// o.keyspace), ingest, fan-out and o.edges edges as processes, one of
// each but the edges. Static member ids of their own ("bench-…"), so a
// run never fences (or is fenced by) run-stack.sh or the integration
// tests, and a rerun takes its partitions back at once.
func startStack(ctx context.Context, o *options, binDir, logDir string) (*cluster.Cluster, error) {
	kafkaSec, tlsSrc, err := cluster.SecurityFromEnv()
	if err != nil {
		return nil, err
	}
	return cluster.Start(ctx, cluster.Config{
		Kafka: kafkaSec, TLS: tlsSrc,
		Brokers: strings.Split(o.brokers, ","), Cassandra: o.cassandra, Keyspace: o.keyspace,
		BinDir: binDir, LogDir: logDir, Name: "bench", Edges: o.edges, JWTSecret: benchSecret, Env: procEnv,
	})
}

// portOf returns the port of host:port, or 0.
func portOf(addr string) int {
	_, p, _ := strings.Cut(addr, ":")
	n, _ := strconv.Atoi(p)
	return n
}
