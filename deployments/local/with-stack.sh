#!/usr/bin/env bash
# with-stack.sh CMD [ARGS...]: run CMD with the real Kafka and Cassandra of
# this folder up, PARLEY_KAFKA_BROKERS and PARLEY_CASSANDRA_HOSTS exported
# (on a secure stack with its TLS, SASL and login settings and the internal
# mTLS certificates, which every service and test client reads),
# and PARLEY_INTEGRATION=require (a test that cannot reach them fails instead
# of skipping). Servers this script had to start are stopped afterwards;
# servers that were already running are left running.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stack() { bash "$here/stack.sh" "$@"; }

started=()
# Read the status once into a variable: piping it into `grep -q` under
# pipefail would count the writer's SIGPIPE as "not running" and stop a
# server this script never started.
status=$(stack status)
for c in kafka cassandra; do
  if ! grep -Eq "^$c +running" <<<"$status"; then
    started+=("$c")
  fi
done
cleanup() {
  local c
  for c in "${started[@]}"; do
    stack stop "$c" >/dev/null 2>&1 || echo "with-stack.sh: could not stop $c" >&2
  done
}
trap cleanup EXIT

t0=$(date +%s)
stack up
echo "with-stack.sh: real Kafka and Cassandra ready after $(($(date +%s) - t0))s"
set -a
eval "$(stack env)"
set +a
# The suite is meant to run the way production does: reusing a stack that
# someone started without security would run it in plaintext, silently.
secure=$(bash -c 'source "$1/versions.env" && echo "$PARLEY_STACK_SECURE"' _ "$here")
if ((secure)); then
  for v in PARLEY_KAFKA_SASL_MECHANISM PARLEY_KAFKA_TLS_CA PARLEY_TLS_CERT PARLEY_CASSANDRA_USERNAME; do
    if [[ -z ${!v:-} ]]; then
      echo "with-stack.sh: the running stack is not secured ($v unset): 'make down' and run again, or set PARLEY_STACK_SECURE=0" >&2
      exit 1
    fi
  done
  echo "with-stack.sh: Kafka SASL_SSL ($PARLEY_KAFKA_SASL_MECHANISM), Cassandra password auth and internal mTLS on"
fi
export PARLEY_INTEGRATION=require
"$@"
