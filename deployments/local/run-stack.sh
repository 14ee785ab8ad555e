#!/usr/bin/env bash
# run-stack.sh: every Parley service as its own process against the real
# Kafka and Cassandra of this folder (started if needed), with the web page
# and WebSocket endpoint on http://127.0.0.1:${PARLEY_HTTP_PORT:-8080}.
# Ctrl-C stops the services in order (edge first); the stack keeps running
# (make down stops it).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$root/bin
logs=${PARLEY_STACK_DIR:-$HOME/.local/state/parley-stack}/services
mkdir -p "$logs"

bash "$here/stack.sh" up
# Exported, the stack's TLS, SASL and login settings (and the development
# certificates as internal mTLS) reach every service through its
# PARLEY_* environment fallbacks.
set -a
eval "$(bash "$here/stack.sh" env)"
set +a

# parley_build_info's commit: a go build in the go.work workspace stamps
# no VCS information, so it goes to the linker (as make build does).
commit=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $commit != unknown ]] && ! git -C "$root" diff --quiet HEAD -- 2>/dev/null; then commit=$commit-dirty; fi
ldflags="-X github.com/parleychat/parley/pkg/server/metrics.Commit=$commit -X github.com/parleychat/parley/pkg/server/metrics.Version=${PARLEY_VERSION:-devel}"
(cd "$root" && go build -ldflags "$ldflags" -o "$bin/" ./cmd/parley ./services/edge/cmd/parley-edge ./services/ingest/cmd/parley-ingest \
  ./services/fanout/cmd/parley-fanout ./services/persistence/cmd/parley-persistence ./services/presence/cmd/parley-presence)
"$bin/parley" topics -brokers "$PARLEY_KAFKA_BROKERS"

secret=${PARLEY_JWT_SECRET:-parley-dev-secret-not-for-production}
http_port=${PARLEY_HTTP_PORT:-8080}
pids=()
names=()
run() {
  local name=$1
  shift
  "$bin/$name" "$@" >>"$logs/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
  echo "started $name (pid $!, log $logs/$name.log)"
}
stop_all() {
  local i
  # Reverse start order: edge first, presence last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
    echo "stopped ${names[i]}"
  done
}
trap stop_all EXIT
trap 'exit 0' INT TERM

run parley-presence -brokers "$PARLEY_KAFKA_BROKERS" -grpc 127.0.0.1:7104 -http 127.0.0.1:8104
run parley-persistence -store cassandra -migrate -cassandra-hosts "$PARLEY_CASSANDRA_HOSTS" -brokers "$PARLEY_KAFKA_BROKERS" \
  -grpc 127.0.0.1:7102 -http 127.0.0.1:8102 -instance-id persistence-0
run parley-ingest -brokers "$PARLEY_KAFKA_BROKERS" -grpc 127.0.0.1:7101 -http 127.0.0.1:8101 -instance-id ingest-0
run parley-fanout -brokers "$PARLEY_KAFKA_BROKERS" -presence 127.0.0.1:7104 -http 127.0.0.1:8103 -instance-id fanout-0
run parley-edge -http "127.0.0.1:$http_port" -grpc 127.0.0.1:7100 -ingest 127.0.0.1:7101 -persistence 127.0.0.1:7102 \
  -presence 127.0.0.1:7104 -jwt-secret "$secret" -dev-tokens -admin 127.0.0.1:8100

# The edge's probes are on its admin address (8100), not its public one.
for addr in 127.0.0.1:8104 127.0.0.1:8102 127.0.0.1:8101 127.0.0.1:8103 127.0.0.1:8100; do
  for _ in $(seq 1 300); do
    curl -fsS "http://$addr/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://$addr/readyz" >/dev/null 2>&1 || { echo "run-stack.sh: service on $addr did not become ready; logs in $logs" >&2; exit 1; }
done
echo
echo "Parley runs as five processes on real Kafka ($PARLEY_KAFKA_BROKERS) and Cassandra ($PARLEY_CASSANDRA_HOSTS)."
if [[ -n ${PARLEY_TLS_CA:-} ]]; then
  echo "Internal gRPC runs with mTLS ($PARLEY_TLS_CERT), Kafka over SASL_SSL, Cassandra with a login."
fi
echo "  web chat:  http://127.0.0.1:$http_port/"
echo "  WebSocket: ws://127.0.0.1:$http_port/ws"
echo "Stop with Ctrl-C."
wait
