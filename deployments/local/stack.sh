#!/usr/bin/env bash
# Parley local stack: a real single-node Apache Kafka (KRaft) and Apache
# Cassandra on 127.0.0.1, fetched from Maven Central and run as plain JVMs
# (no Docker). Versions and default ports live in versions.env.
#
#   stack.sh up [kafka|cassandra]      fetch if needed, start, wait until ready
#   stack.sh down [--purge] [kafka|cassandra]
#                                      stop (SIGTERM, then SIGKILL); --purge
#                                      also deletes data, logs and configs
#   stack.sh start NAME / stop NAME    the same for one server
#   stack.sh status                    running/stopped, pid, port, log
#   stack.sh env                       PARLEY_KAFKA_BROKERS=... lines (with the
#                                      TLS, SASL and login settings of a
#                                      secure stack)
#   stack.sh check                     admin round trip to Kafka, CQL query
#   stack.sh fetch [kafka|cassandra]   only fill the jar cache
#
# The stack is one per machine (its ports and state folder are shared by
# every clone): up, down, start and stop refuse while another clone's
# stack runs, naming that clone; FORCE=1 overrides.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
# shellcheck source=versions.env
. "$SCRIPT_DIR/versions.env"

CACHE_DIR=${PARLEY_STACK_CACHE:-${HOME:?HOME is not set}/.cache/parley-stack}
STATE_DIR=${PARLEY_STACK_DIR:-${HOME:?HOME is not set}/.local/state/parley-stack}
# Configs hold absolute paths (cassandra.config is a file:// URL).
[[ $CACHE_DIR == /* ]] || CACHE_DIR=$PWD/$CACHE_DIR
[[ $STATE_DIR == /* ]] || STATE_DIR=$PWD/$STATE_DIR
ALL_COMPONENTS="kafka cassandra"

# ---------------------------------------------------------------- helpers

say() { printf '%s\n' "$*"; }
warn() { printf 'stack.sh: %s\n' "$*" >&2; }
die() {
  printf 'stack.sh: error: %s\n' "$*" >&2
  exit 1
}

now_ms() {
  if [[ -n ${EPOCHREALTIME:-} ]]; then
    local t=${EPOCHREALTIME/[.,]/}
    echo $((10#$t / 1000))
  else
    echo $(($(date +%s) * 1000))
  fi
}

# seconds_since START_MS -> "12.3"
seconds_since() {
  local ms=$(($(now_ms) - $1))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

abs_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

check_port_value() {
  local name=$1 value=$2
  if ! [[ $value =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
    die "$name must be a TCP port number, got '$value'"
  fi
}

validate_settings() {
  check_port_value PARLEY_KAFKA_PORT "$PARLEY_KAFKA_PORT"
  check_port_value PARLEY_KAFKA_CONTROLLER_PORT "$PARLEY_KAFKA_CONTROLLER_PORT"
  check_port_value PARLEY_CASSANDRA_PORT "$PARLEY_CASSANDRA_PORT"
  check_port_value PARLEY_CASSANDRA_STORAGE_PORT "$PARLEY_CASSANDRA_STORAGE_PORT"
  check_port_value PARLEY_KAFKA_SASL_PORT "$PARLEY_KAFKA_SASL_PORT"
  [[ $PARLEY_STACK_SECURE == [01] ]] || die "PARLEY_STACK_SECURE must be 0 or 1, got '$PARLEY_STACK_SECURE'"
  local dupes
  dupes=$(printf '%s\n' "$PARLEY_KAFKA_PORT" "$PARLEY_KAFKA_CONTROLLER_PORT" "$PARLEY_KAFKA_SASL_PORT" \
    "$PARLEY_CASSANDRA_PORT" "$PARLEY_CASSANDRA_STORAGE_PORT" | sort | uniq -d)
  [[ -z $dupes ]] || die "the five PARLEY_*_PORT settings must differ (port $dupes is used twice)"
  local t
  for t in PARLEY_KAFKA_START_TIMEOUT PARLEY_CASSANDRA_START_TIMEOUT PARLEY_STOP_TIMEOUT; do
    [[ ${!t} =~ ^[0-9]+$ ]] || die "$t must be a whole number of seconds, got '${!t}'"
  done
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Best-effort description of who listens on PORT.
port_owner() {
  local out=""
  if command -v ss >/dev/null 2>&1; then
    out=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*)' | head -n 1 || true)
  fi
  if [[ -z $out ]] && command -v lsof >/dev/null 2>&1; then
    out=$(lsof -nP -iTCP:"$1" -sTCP:LISTEN 2>/dev/null | awk 'NR == 2 {print $1 " pid " $2}' || true)
  fi
  printf '%s' "${out:-unknown process}"
}

proc_args() {
  if [[ -r /proc/$1/cmdline ]]; then
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
  else
    ps -ww -o args= -p "$1" 2>/dev/null || true
  fi
}

# Alive and not a zombie.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [[ $st != Z* ]]
}

# ------------------------------------------------------------- components

comp_title() {
  case $1 in
    kafka) echo Kafka ;;
    cassandra) echo Cassandra ;;
  esac
}
comp_version() {
  case $1 in
    kafka) echo "$PARLEY_KAFKA_VERSION" ;;
    cassandra) echo "$PARLEY_CASSANDRA_VERSION" ;;
  esac
}
comp_port() {
  case $1 in
    kafka) echo "$PARLEY_KAFKA_PORT" ;;
    cassandra) echo "$PARLEY_CASSANDRA_PORT" ;;
  esac
}
# All ports a server binds, as "port:purpose" words.
comp_all_ports() {
  case $1 in
    kafka)
      echo "$PARLEY_KAFKA_PORT:broker $PARLEY_KAFKA_CONTROLLER_PORT:controller"
      if ((PARLEY_STACK_SECURE)); then echo "$PARLEY_KAFKA_SASL_PORT:SASL_SSL"; fi
      ;;
    cassandra) echo "$PARLEY_CASSANDRA_PORT:CQL $PARLEY_CASSANDRA_STORAGE_PORT:storage" ;;
  esac
}
comp_timeout() {
  case $1 in
    kafka) echo "$PARLEY_KAFKA_START_TIMEOUT" ;;
    cassandra) echo "$PARLEY_CASSANDRA_START_TIMEOUT" ;;
  esac
}
comp_home() { echo "$CACHE_DIR/$1-$(comp_version "$1")"; }
comp_lib() { echo "$(comp_home "$1")/lib"; }
comp_state() { echo "$STATE_DIR/$1"; }
comp_log() { echo "$STATE_DIR/$1/$1.log"; }
comp_pidfile() { echo "$STATE_DIR/$1/$1.pid"; }
# True when the JVM has module $1. The list is read whole before grep sees
# it: `java --list-modules | grep -q` under pipefail could fail on the
# writer's SIGPIPE once grep has matched.
java_has_module() {
  local modules
  modules=$("$JAVA" --list-modules 2>/dev/null) || return 1
  grep -q "^$1@" <<<"$modules"
}

# Port recorded at launch, so status/env report what really runs.
comp_portfile() { echo "$STATE_DIR/$1/$1.port"; }
# Present when the running server was launched secure (SASL_SSL listener
# port inside for Kafka, the login for Cassandra), so env reports what
# really runs.
comp_securefile() { echo "$STATE_DIR/$1/$1.secure"; }
tls_dir() { echo "$STATE_DIR/tls"; }

# Writes the development CA and certificate once (cmd/internal/devcerts).
ensure_certs() {
  [[ -s $(tls_dir)/tls-bundle.pem ]] && return 0
  command -v go >/dev/null 2>&1 || die "go not found: the secure stack makes its certificates with go run ./cmd/internal/devcerts (or set PARLEY_STACK_SECURE=0)"
  (cd "$REPO_ROOT" && go run ./cmd/internal/devcerts -dir "$(tls_dir)") || die "making the development certificates failed"
}
# Marker put on the JVM command line to recognise our own processes.
comp_marker() { echo "-Dparley.stack=$1"; }

# Prints the pid when our server runs; false otherwise.
comp_pid() {
  local pidfile pid
  pidfile=$(comp_pidfile "$1")
  [[ -s $pidfile ]] || return 1
  pid=$(head -n 1 "$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  [[ " $(proc_args "$pid") " == *" $(comp_marker "$1") "* ]] || return 1
  echo "$pid"
}

# Port the running server was started with (else the configured one).
comp_running_port() {
  local portfile
  portfile=$(comp_portfile "$1")
  if comp_pid "$1" >/dev/null && [[ -s $portfile ]]; then
    head -n 1 "$portfile"
  else
    comp_port "$1"
  fi
}

parse_components() {
  if [[ $# -eq 0 ]]; then
    echo "$ALL_COMPONENTS"
    return
  fi
  local c out=""
  for c in "$@"; do
    case $c in
      kafka | cassandra) out="$out $c" ;;
      *) die "unknown server '$c' (expected kafka or cassandra)" ;;
    esac
  done
  echo "$out"
}

# ------------------------------------------------------------- tools

JAVA=""
JAVA_MAJOR=""

find_java() {
  [[ -n $JAVA ]] && return 0
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
    JAVA=$JAVA_HOME/bin/java
  elif command -v java >/dev/null 2>&1; then
    JAVA=$(command -v java)
  else
    die "java not found: install a Java 17 JDK (Debian: apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
  fi
  local v
  v=$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  [[ $v == 1.* ]] && v=${v#1.}
  JAVA_MAJOR=${v%%[.+-]*}
  [[ $JAVA_MAJOR =~ ^[0-9]+$ ]] || die "cannot tell the version of $JAVA (got '$v')"
}

require_java_for() {
  find_java
  case $1 in
    kafka)
      ((JAVA_MAJOR >= 17)) || die "Kafka $PARLEY_KAFKA_VERSION needs Java 17 or newer; $JAVA is Java $JAVA_MAJOR (set JAVA_HOME)"
      ;;
    cassandra)
      ((JAVA_MAJOR == 17)) || die "Cassandra $PARLEY_CASSANDRA_VERSION is run here with Java 17 only; $JAVA is Java $JAVA_MAJOR (set JAVA_HOME to a Java 17)"
      ;;
  esac
}

require_mvn() {
  command -v mvn >/dev/null 2>&1 ||
    die "mvn not found: Maven 3.8+ is needed to fetch the $1 jars into $CACHE_DIR (Debian: apt-get install maven)"
}

# ------------------------------------------------------------- fetching

write_fetch_pom() {
  local comp=$1 deps
  case $comp in
    kafka)
      deps="
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$PARLEY_KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>$PARLEY_LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$PARLEY_LOG4J_VERSION</version>
    </dependency>"
      ;;
    cassandra)
      deps="
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$PARLEY_CASSANDRA_VERSION</version>
    </dependency>"
      ;;
  esac
  cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deployments/local/stack.sh; only used to fetch jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>parley.local-stack</groupId>
  <artifactId>$comp-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>$deps
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>$PARLEY_MAVEN_DEPENDENCY_PLUGIN_VERSION</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
}

# Copies the server jar and its runtime dependencies into the cache, once.
fetch_component() {
  local comp=$1 home lib marker pom want
  home=$(comp_home "$comp")
  lib=$home/lib
  marker=$home/.complete
  mkdir -p "$home"
  pom=$(write_fetch_pom "$comp")
  want=$(printf '%s\n' "$pom" | cksum)
  if [[ -f $marker && -d $lib && "$(cat "$marker")" == "$want" ]]; then
    return 0
  fi
  require_mvn "$comp"
  local title start
  title=$(comp_title "$comp")
  say "Fetching $title $(comp_version "$comp") and its runtime dependencies into $lib ..."
  start=$(now_ms)
  rm -f "$marker"
  rm -rf "$home/lib.partial"
  printf '%s\n' "$pom" >"$home/pom.xml"
  # Maven 3.8 prints stray colour resets even in batch mode; strip them.
  local esc
  esc=$(printf '\033')
  if ! mvn -B -q -Dstyle.color=never -f "$home/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$home/lib.partial" 2>&1 |
    sed "s/${esc}\\[[0-9;]*m//g" >&2; then
    rm -rf "$home/lib.partial"
    die "fetching $title jars failed (mvn output above; pom: $home/pom.xml)"
  fi
  rm -rf "$lib"
  mv "$home/lib.partial" "$lib"
  printf '%s\n' "$want" >"$marker"
  say "Fetched $title: $(find "$lib" -name '*.jar' | wc -l | tr -d ' ') jars in $(seconds_since "$start") s"
}

# ------------------------------------------------------------- configs

write_kafka_config() {
  local dir=$1 listeners advertised protocols
  mkdir -p "$dir/data"
  listeners="PLAINTEXT://127.0.0.1:$PARLEY_KAFKA_PORT,CONTROLLER://127.0.0.1:$PARLEY_KAFKA_CONTROLLER_PORT"
  advertised=$listeners
  protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if ((PARLEY_STACK_SECURE)); then
    listeners="$listeners,SASL_SSL://127.0.0.1:$PARLEY_KAFKA_SASL_PORT"
    advertised="$advertised,SASL_SSL://127.0.0.1:$PARLEY_KAFKA_SASL_PORT"
    protocols="$protocols,SASL_SSL:SASL_SSL"
  fi
  cat >"$dir/server.properties" <<EOF
# Generated by deployments/local/stack.sh on every start; edits are lost.
# Single combined broker+controller (KRaft) on loopback, for development and
# tests. Production runs 3+ brokers with RF 3 and min.insync.replicas=2.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$PARLEY_KAFKA_CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$dir/data

# One node: every replication factor and min ISR is 1.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Topics are created explicitly by the application (admin client).
auto.create.topics.enable=false
# No 3 s wait before the first consumer-group rebalance.
group.initial.rebalance.delay.ms=0
# The sequencer commits a transaction per batch and begins the next at
# once; the broker retries the first produce of the new transaction until
# the last one's markers are written, by default 20 ms later.
add.partitions.to.txn.retry.backoff.ms=1
EOF
  if ((PARLEY_STACK_SECURE)); then
    cat >>"$dir/server.properties" <<EOF

# SASL_SSL for the services and tests: SCRAM-SHA-512 users live in the
# cluster metadata (added at format time, or by ScramUser.java), PLAIN
# users in the JAAS line below. The key store is the development
# certificate and its key in one PEM file (cmd/internal/devcerts).
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$PARLEY_KAFKA_SASL_USER="$PARLEY_KAFKA_SASL_PASSWORD";
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$(tls_dir)/tls-bundle.pem
listener.name.sasl_ssl.ssl.truststore.type=PEM
listener.name.sasl_ssl.ssl.truststore.location=$(tls_dir)/ca.crt
EOF
  fi
  if [[ -n ${PARLEY_KAFKA_PROPS:-} ]]; then
    # Extra broker settings, one key=value per line; a key set above is
    # overridden (the last one wins).
    printf '\n# PARLEY_KAFKA_PROPS\n%s\n' "$PARLEY_KAFKA_PROPS" >>"$dir/server.properties"
  fi
  cat >"$dir/log4j2.properties" <<'EOF'
# Generated by deployments/local/stack.sh: broker logs go to stdout, which
# stack.sh redirects to kafka.log.
status = warn
name = parley-kafka
# Let the broker log its whole shutdown instead of log4j's own hook
# stopping the appenders first.
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
  cat >"$dir/tools-log4j2.properties" <<'EOF'
# Generated by deployments/local/stack.sh: quiet logging for CLI tools.
status = warn
name = parley-kafka-tools
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
EOF
}

write_cassandra_config() {
  local dir=$1 d
  for d in data commitlog saved_caches hints cdc_raw; do
    mkdir -p "$dir/data/$d"
  done
  mkdir -p "$dir/logs" "$dir/tmp" "$dir/triggers"
  cat >"$dir/cassandra.yaml" <<EOF
# Generated by deployments/local/stack.sh on every start; edits are lost.
# Single node on loopback, for development and tests. Production runs 3+
# nodes, NetworkTopologyStrategy with RF 3, and LOCAL_QUORUM.
cluster_name: parley-local
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$PARLEY_CASSANDRA_STORAGE_PORT"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $PARLEY_CASSANDRA_STORAGE_PORT
start_native_transport: true
native_transport_port: $PARLEY_CASSANDRA_PORT
data_file_directories:
  - $dir/data/data
commitlog_directory: $dir/data/commitlog
saved_caches_directory: $dir/data/saved_caches
hints_directory: $dir/data/hints
cdc_raw_directory: $dir/data/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10s
disk_failure_policy: stop
commit_failure_policy: stop
# Tests drop and recreate keyspaces often; no snapshot on each drop.
auto_snapshot: false
EOF
  if ((PARLEY_STACK_SECURE)); then
    cat >>"$dir/cassandra.yaml" <<EOF
# Logins checked against system_auth; the default superuser
# ($PARLEY_CASSANDRA_USERNAME) is created at the first start.
authenticator: PasswordAuthenticator
EOF
  fi
  if [[ -n ${PARLEY_CASSANDRA_YAML:-} ]]; then
    # Extra settings, YAML lines appended as they are (for A/B runs).
    printf '\n# PARLEY_CASSANDRA_YAML\n%s\n' "$PARLEY_CASSANDRA_YAML" >>"$dir/cassandra.yaml"
  fi
  cat >"$dir/logback.xml" <<'EOF'
<!-- Generated by deployments/local/stack.sh: INFO to stdout, which stack.sh
     redirects to cassandra.log. -->
<configuration scan="false">
  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="OUT"/>
  </root>
</configuration>
EOF
  cat >"$dir/tools-logback.xml" <<'EOF'
<!-- Generated by deployments/local/stack.sh: quiet logging for checks. -->
<configuration scan="false">
  <appender name="ERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %logger{0} - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="ERR"/></root>
</configuration>
EOF
}

# ------------------------------------------------------------- launching

# Formats the KRaft metadata/log directory once; the cluster id is kept in
# the state folder so a re-format after a partial purge reuses it.
format_kafka() {
  local dir lib idfile out
  dir=$(comp_state kafka)
  lib=$(comp_lib kafka)
  [[ -f $dir/data/meta.properties ]] && return 0
  idfile=$dir/cluster.id
  if [[ ! -s $idfile ]]; then
    out=$("$JAVA" -cp "$lib/*" -Dlog4j2.configurationFile="file:$dir/tools-log4j2.properties" \
      kafka.tools.StorageTool random-uuid 2>&1) || die "kafka.tools.StorageTool random-uuid failed: $out"
    printf '%s\n' "$out" | tail -n 1 >"$idfile"
  fi
  say "Formatting Kafka storage in $dir/data (cluster id $(cat "$idfile")) ..."
  if ! out=$("$JAVA" -cp "$lib/*" -Dlog4j2.configurationFile="file:$dir/tools-log4j2.properties" \
    kafka.tools.StorageTool format --standalone -t "$(cat "$idfile")" \
    -c "$dir/server.properties" --ignore-formatted \
    --add-scram "SCRAM-SHA-512=[name=$PARLEY_KAFKA_SASL_USER,password=$PARLEY_KAFKA_SASL_PASSWORD]" 2>&1); then
    printf '%s\n' "$out" >&2
    die "formatting Kafka storage failed (kafka.tools.StorageTool format)"
  fi
  # The SCRAM user is in the metadata from the start.
  : >"$dir/scram-user"
}

# A broker formatted before the stack had SASL has no SCRAM user: add it
# once through the PLAINTEXT listener with the admin client.
ensure_scram_user() {
  local dir lib out
  dir=$(comp_state kafka)
  lib=$(comp_lib kafka)
  [[ -e $dir/scram-user ]] && return 0
  java_has_module jdk.compiler || die "Kafka's SCRAM user is missing and adding it needs a JDK (javac); or run 'stack.sh down --purge kafka' to format again"
  write_scram_user "$dir/ScramUser.java"
  if ! out=$("$JAVA" -Xmx256m -cp "$lib/*" -Dlog4j2.configurationFile="file:$dir/tools-log4j2.properties" \
    "$dir/ScramUser.java" "127.0.0.1:$(comp_running_port kafka)" "$PARLEY_KAFKA_SASL_USER" "$PARLEY_KAFKA_SASL_PASSWORD" 2>&1); then
    printf '%s\n' "$out" >&2
    die "adding Kafka's SCRAM user $PARLEY_KAFKA_SASL_USER failed"
  fi
  : >"$dir/scram-user"
  say "Added Kafka SCRAM-SHA-512 user $PARLEY_KAFKA_SASL_USER"
}

kafka_command() {
  local dir lib
  dir=$(comp_state kafka)
  lib=$(comp_lib kafka)
  printf '%s\n' "$JAVA" "$(comp_marker kafka)" \
    "-Xms$PARLEY_KAFKA_HEAP" "-Xmx$PARLEY_KAFKA_HEAP" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=file:$dir/log4j2.properties" \
    "-Dkafka.logs.dir=$dir" \
    -cp "$lib/*" kafka.Kafka "$dir/server.properties"
}

cassandra_command() {
  local dir lib jamm
  dir=$(comp_state cassandra)
  lib=$(comp_lib cassandra)
  printf '%s\n' "$JAVA" "$(comp_marker cassandra)" \
    "-Xms$PARLEY_CASSANDRA_HEAP" "-Xmx$PARLEY_CASSANDRA_HEAP" \
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 \
    -XX:MaxGCPauseMillis=300 -XX:+UseThreadPriorities -XX:+PerfDisableSharedMem \
    -XX:+ExitOnOutOfMemoryError \
    -ea -Djava.net.preferIPv4Stack=true -Djava.awt.headless=true \
    -Djdk.attach.allowAttachSelf=true \
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED \
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED \
    --add-exports java.sql/java.sql=ALL-UNNAMED \
    --add-exports java.base/java.lang.ref=ALL-UNNAMED \
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED \
    --add-opens java.base/java.lang.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED \
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED \
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
    --add-opens java.base/java.io=ALL-UNNAMED \
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED \
    --add-opens java.base/java.lang=ALL-UNNAMED \
    --add-opens java.base/java.util=ALL-UNNAMED \
    --add-opens java.base/java.nio=ALL-UNNAMED
  # Present only in a full JDK; Cassandra's shipped options list them too.
  if java_has_module jdk.compiler; then
    printf '%s\n' --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED \
      --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  fi
  if java_has_module jdk.attach; then
    printf '%s\n' --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  fi
  jamm=$(find "$lib" -maxdepth 1 -name 'jamm-*.jar' | head -n 1)
  [[ -n $jamm ]] && printf '%s\n' "-javaagent:$jamm"
  printf '%s\n' \
    -Dio.netty.tryReflectionSetAccessible=true \
    -Dio.netty.allocator.useCacheForAllThreads=true \
    -Dio.netty.allocator.maxOrder=11 \
    "-Dcassandra.config=file://$dir/cassandra.yaml" \
    "-Dcassandra.storagedir=$dir/data" \
    "-Dcassandra.logdir=$dir/logs" \
    "-Dlogback.configurationFile=file:$dir/logback.xml" \
    "-Djna.tmpdir=$dir/tmp" \
    "-Dcassandra.triggers_dir=$dir/triggers" \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -Dcassandra-foreground=yes \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.load_ring_state=false \
    -Dcassandra.ring_delay_ms=1000 \
    -Dcassandra.unsafesystem=true \
    -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon
}

# Starts the JVM in its own session, stdout/stderr into the log, and records
# the JVM's own pid (bash -c writes $$ then execs java, keeping that pid).
launch() {
  local comp=$1 log pidfile line
  local argv=()
  log=$(comp_log "$comp")
  pidfile=$(comp_pidfile "$comp")
  while IFS= read -r line; do
    argv+=("$line")
  done < <("${comp}_command")
  # The logs of the last five starts stay (.1 the newest): a chaos run
  # restarts the broker, and the shutdown log of a failed run must
  # survive the next start or two.
  local i
  for i in 4 3 2 1; do
    [[ -f $log.$i ]] && mv -f "$log.$i" "$log.$((i + 1))"
  done
  [[ -f $log ]] && mv -f "$log" "$log.1"
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  local inner='echo "$$" >"$0"; exec "$@"'
  if command -v setsid >/dev/null 2>&1; then
    setsid bash -c "$inner" "$pidfile" "${argv[@]}" </dev/null >>"$log" 2>&1 9>&- &
  else
    nohup bash -c "$inner" "$pidfile" "${argv[@]}" </dev/null >>"$log" 2>&1 9>&- &
  fi
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s $pidfile ]] && break
    sleep 0.1
  done
  [[ -s $pidfile ]] || die "$(comp_title "$comp") did not start (no pid file $pidfile); see $log"
  comp_port "$comp" >"$(comp_portfile "$comp")"
  rm -f "$(comp_securefile "$comp")"
  if ((PARLEY_STACK_SECURE)); then
    case $comp in
      kafka) echo "$PARLEY_KAFKA_SASL_PORT" >"$(comp_securefile kafka)" ;;
      cassandra) echo "$PARLEY_CASSANDRA_USERNAME" >"$(comp_securefile cassandra)" ;;
    esac
  fi
}

# Prints why a server failed, its last 30 log lines, and cleans up.
report_failure() {
  local comp=$1 pid=$2 reason=$3 log i
  log=$(comp_log "$comp")
  # Log tail first, so it shows where startup stood, not the shutdown.
  {
    printf 'stack.sh: error: %s %s\n' "$(comp_title "$comp")" "$reason"
    printf 'stack.sh: log file: %s (last 30 lines follow)\n' "$log"
    tail -n 30 "$log" 2>/dev/null | cut -c 1-400 | sed 's/^/    /' || true
  } >&2
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$pid" || break
      sleep 0.2
    done
    if alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$(comp_pidfile "$comp")" "$(comp_portfile "$comp")" "$(comp_securefile "$comp")"
}

ready_in_log() {
  local log
  log=$(comp_log "$1")
  [[ -f $log ]] || return 1
  case $1 in
    kafka) grep -qF 'Kafka Server started' "$log" ;;
    cassandra)
      grep -qE 'Startup complete|Starting listening for CQL clients' "$log" || return 1
      # With logins on, a fresh node takes the default superuser's role
      # a moment after it listens; a node that had roles before says
      # nothing about them.
      [[ -e $(comp_securefile cassandra) && ! -e $(comp_state cassandra)/roles-existed ]] || return 0
      grep -qF 'Created default superuser role' "$log"
      ;;
  esac
}

# Refuses to start when another process holds one of our ports.
check_ports_free() {
  local comp=$1 entry port purpose
  for entry in $(comp_all_ports "$comp"); do
    port=${entry%%:*}
    purpose=${entry#*:}
    if port_open "$port"; then
      die "$(comp_title "$comp") $purpose port 127.0.0.1:$port is already in use by another process ($(port_owner "$port")); stop it or set a different port (see deployments/local/versions.env)"
    fi
  done
}

# ------------------------------------------------------------- commands

acquire_lock() {
  mkdir -p "$STATE_DIR"
  command -v flock >/dev/null 2>&1 || return 0
  # fd 9 stays open (and locked) until this script exits; launch() closes it
  # for the servers so they never inherit the lock.
  exec 9>"$STATE_DIR/.lock"
  flock -w 900 9 || die "another stack.sh holds $STATE_DIR/.lock"
}

# One stack per machine, one owner: the state folder and ports are
# shared by every clone of the repository, so the clone that started the
# running stack is recorded (its root, in $STATE_DIR/owner), and up, down,
# start and stop from another clone refuse while it runs: one clone's
# `make down` must not stop the stack another clone's tests are using.
# FORCE=1 acts anyway. A stack started before owners were recorded, or
# by a clone that no longer exists, is anyone's.
owner_file() { echo "$STATE_DIR/owner"; }

stack_running() {
  local c
  for c in $ALL_COMPONENTS; do
    comp_pid "$c" >/dev/null && return 0
  done
  return 1
}

# check_owner VERB: die unless this clone may VERB the running stack.
check_owner() {
  local verb=$1 owner
  stack_running || return 0
  [[ -s $(owner_file) ]] || return 0
  owner=$(head -n 1 "$(owner_file)")
  [[ $owner == "$REPO_ROOT" ]] && return 0
  if [[ ! -d $owner ]]; then
    warn "the running stack was started by $owner, which no longer exists; this clone takes it over"
    return 0
  fi
  if [[ ${FORCE:-0} == 1 ]]; then
    warn "FORCE=1: acting on the stack started by the clone at $owner"
    return 0
  fi
  die "the Kafka and Cassandra running from $STATE_DIR were started by another clone, $owner (this one is $REPO_ROOT); its tests may be using them, so this clone does not $verb them. Run 'make down' in $owner when it is done, or run this with FORCE=1 to $verb them anyway."
}

# claim_owner records this clone as the owner, unless another clone's
# stack runs (FORCE=1 acts on it without taking it over).
claim_owner() {
  if [[ -s $(owner_file) ]] && [[ $(head -n 1 "$(owner_file)") != "$REPO_ROOT" ]] && [[ -d $(head -n 1 "$(owner_file)") ]] && stack_running; then
    return 0
  fi
  printf '%s\n' "$REPO_ROOT" >"$(owner_file)"
}

# release_owner forgets the owner once nothing runs.
release_owner() {
  stack_running || rm -f "$(owner_file)"
}

cmd_fetch() {
  local comps c
  comps=$(parse_components "$@")
  for c in $comps; do
    fetch_component "$c"
  done
}

cmd_up() {
  local comps c pid port title
  comps=$(parse_components "$@")
  validate_settings
  for c in $comps; do
    require_java_for "$c"
  done
  acquire_lock
  STATE_DIR=$(abs_dir "$STATE_DIR")
  CACHE_DIR=$(abs_dir "$CACHE_DIR")
  check_owner start
  claim_owner
  for c in $comps; do
    fetch_component "$c"
  done

  # Launch what is not running (Cassandra first: it is the slow one).
  local pending_names=() pending_pids=() pending_starts=()
  for c in cassandra kafka; do
    [[ " $comps " == *" $c "* ]] || continue
    title=$(comp_title "$c")
    if pid=$(comp_pid "$c"); then
      port=$(comp_running_port "$c")
      if port_open "$port" && ready_in_log "$c"; then
        say "$title is already running (pid $pid) on 127.0.0.1:$port"
        if [[ $port != "$(comp_port "$c")" ]]; then
          warn "$title runs on port $port, not the configured $(comp_port "$c"); run 'stack.sh stop $c' first to change it"
        fi
        continue
      fi
      say "$title is starting (pid $pid); waiting for it"
      pending_names+=("$c")
      pending_pids+=("$pid")
      pending_starts+=("$(now_ms)")
      continue
    fi
    rm -f "$(comp_pidfile "$c")" "$(comp_portfile "$c")"
    check_ports_free "$c"
    mkdir -p "$(comp_state "$c")"
    ((PARLEY_STACK_SECURE)) && ensure_certs
    if [[ $c == cassandra ]]; then
      rm -f "$(comp_state cassandra)/roles-existed"
      [[ -d $(comp_state cassandra)/data/data/system_auth ]] && : >"$(comp_state cassandra)/roles-existed"
    fi
    "write_${c}_config" "$(comp_state "$c")"
    [[ $c == kafka ]] && format_kafka
    say "Starting $title $(comp_version "$c") on 127.0.0.1:$(comp_port "$c") (log: $(comp_log "$c"))"
    pending_starts+=("$(now_ms)")
    launch "$c"
    pending_names+=("$c")
    pending_pids+=("$(head -n 1 "$(comp_pidfile "$c")")")
  done

  # Wait for all launched servers together, so each time is its own.
  local failed=0 i n done_count timeout elapsed_ms
  n=${#pending_names[@]}
  local finished=()
  for ((i = 0; i < n; i++)); do finished+=(0); done
  done_count=0
  while ((done_count < n)); do
    for ((i = 0; i < n; i++)); do
      ((finished[i] == 0)) || continue
      c=${pending_names[i]}
      pid=${pending_pids[i]}
      title=$(comp_title "$c")
      if ! alive "$pid"; then
        report_failure "$c" "$pid" "exited during startup (pid $pid)"
        failed=1
      elif ready_in_log "$c" && port_open "$(comp_running_port "$c")"; then
        say "$title ready on 127.0.0.1:$(comp_running_port "$c") in $(seconds_since "${pending_starts[i]}") s (pid $pid)"
      else
        timeout=$(comp_timeout "$c")
        elapsed_ms=$(($(now_ms) - pending_starts[i]))
        ((elapsed_ms < timeout * 1000)) && continue
        report_failure "$c" "$pid" "did not become ready within $timeout s (stopped it; raise PARLEY_$(echo "$c" | tr '[:lower:]' '[:upper:]')_START_TIMEOUT on a slow machine)"
        failed=1
      fi
      finished[i]=1
      done_count=$((done_count + 1))
    done
    if ((done_count < n)); then
      sleep 0.5
    fi
  done
  ((failed == 0)) || exit 1
  if [[ " $comps " == *" kafka "* && -e $(comp_securefile kafka) ]]; then
    ensure_scram_user
  fi
  return 0
}

stop_component() {
  local comp=$1 title pid pidfile i
  title=$(comp_title "$comp")
  pidfile=$(comp_pidfile "$comp")
  if ! pid=$(comp_pid "$comp"); then
    [[ -e $pidfile ]] && rm -f "$pidfile"
    rm -f "$(comp_portfile "$comp")"
    say "$title is not running"
    return 0
  fi
  say "Stopping $title (pid $pid) ..."
  local start
  start=$(now_ms)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < PARLEY_STOP_TIMEOUT * 5; i++)); do
    alive "$pid" || break
    sleep 0.2
  done
  if alive "$pid"; then
    warn "$title did not stop within $PARLEY_STOP_TIMEOUT s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$pid" || break
      sleep 0.2
    done
    alive "$pid" && die "$title (pid $pid) survived SIGKILL"
  fi
  rm -f "$pidfile" "$(comp_portfile "$comp")"
  say "$title stopped in $(seconds_since "$start") s"
}

cmd_down() {
  local purge=0 args=() a comps c dir
  for a in "$@"; do
    case $a in
      --purge) purge=1 ;;
      *) args+=("$a") ;;
    esac
  done
  validate_settings
  if ((${#args[@]} > 0)); then
    comps=$(parse_components "${args[@]}")
  else
    comps=$ALL_COMPONENTS
  fi
  acquire_lock
  check_owner stop
  for c in $comps; do
    stop_component "$c"
  done
  release_owner
  if ((purge)); then
    for c in $comps; do
      dir=$(comp_state "$c")
      if [[ -d $dir ]]; then
        rm -rf "${dir:?}"
        say "Purged $(comp_title "$c") data, logs and configs ($dir)"
      fi
    done
  fi
}

cmd_status() {
  local c pid port title
  for c in $ALL_COMPONENTS; do
    title=$(comp_title "$c")
    if pid=$(comp_pid "$c"); then
      port=$(comp_running_port "$c")
      local health="ready"
      port_open "$port" || health="not accepting connections yet"
      printf '%-10s running  pid %-8s 127.0.0.1:%-6s %s  log %s\n' \
        "$c" "$pid" "$port" "$health" "$(comp_log "$c")"
    else
      printf '%-10s stopped  pid %-8s 127.0.0.1:%-6s log %s\n' \
        "$c" "-" "$(comp_port "$c")" "$(comp_log "$c")"
    fi
  done
  printf 'cache %s\nstate %s\n' "$CACHE_DIR" "$STATE_DIR"
  if stack_running && [[ -s $(owner_file) ]]; then
    printf 'owner %s\n' "$(head -n 1 "$(owner_file)")"
  fi
}

# The settings the services and tests read. A secure stack (see
# versions.env) gets the SASL_SSL port with its CA and SCRAM login, the
# Cassandra login, and the development certificates as the services'
# internal mTLS; a stack launched without security, plaintext only.
cmd_env() {
  local sasl_port tls
  tls=$(tls_dir)
  if comp_pid kafka >/dev/null && [[ -s $(comp_securefile kafka) ]]; then
    sasl_port=$(head -n 1 "$(comp_securefile kafka)")
    printf 'PARLEY_KAFKA_BROKERS=127.0.0.1:%s\n' "$sasl_port"
    printf 'PARLEY_KAFKA_TLS_CA=%s\n' "$tls/ca.crt"
    printf 'PARLEY_KAFKA_SASL_MECHANISM=SCRAM-SHA-512\n'
    printf 'PARLEY_KAFKA_SASL_USER=%s\n' "$PARLEY_KAFKA_SASL_USER"
    printf 'PARLEY_KAFKA_SASL_PASSWORD=%s\n' "$PARLEY_KAFKA_SASL_PASSWORD"
    printf 'PARLEY_TLS_CA=%s\nPARLEY_TLS_CERT=%s\nPARLEY_TLS_KEY=%s\n' "$tls/ca.crt" "$tls/tls.crt" "$tls/tls.key"
  else
    printf 'PARLEY_KAFKA_BROKERS=127.0.0.1:%s\n' "$(comp_running_port kafka)"
  fi
  printf 'PARLEY_CASSANDRA_HOSTS=127.0.0.1:%s\n' "$(comp_running_port cassandra)"
  if comp_pid cassandra >/dev/null && [[ -s $(comp_securefile cassandra) ]]; then
    printf 'PARLEY_CASSANDRA_USERNAME=%s\n' "$PARLEY_CASSANDRA_USERNAME"
    printf 'PARLEY_CASSANDRA_PASSWORD=%s\n' "$PARLEY_CASSANDRA_PASSWORD"
  fi
}

# A real round trip to each running server: create/list/delete a topic with
# Kafka's admin client, read system.local over CQL.
cmd_check() {
  local failed=0 dir lib port out
  if comp_pid kafka >/dev/null; then
    require_java_for kafka
    dir=$(comp_state kafka)
    lib=$(comp_lib kafka)
    port=$(comp_running_port kafka)
    if ! java_has_module jdk.compiler; then
      if port_open "$port"; then
        say "kafka: OK, port 127.0.0.1:$port accepts connections (no JDK compiler for an admin round trip)"
      else
        warn "kafka: port 127.0.0.1:$port does not accept connections"
        failed=1
      fi
    elif write_kafka_check "$dir/KafkaCheck.java" && out=$("$JAVA" -Xmx256m -cp "$lib/*" -Dlog4j2.configurationFile="file:$dir/tools-log4j2.properties" \
      "$dir/KafkaCheck.java" "127.0.0.1:$port" 2>&1); then
      say "kafka: OK, $(printf '%s' "$out" | tail -n 1)"
    else
      printf '%s\n' "$out" >&2
      warn "kafka: admin round trip on 127.0.0.1:$port failed"
      failed=1
    fi
  else
    warn "kafka: not running"
    failed=1
  fi
  if comp_pid cassandra >/dev/null; then
    require_java_for cassandra
    dir=$(comp_state cassandra)
    lib=$(comp_lib cassandra)
    port=$(comp_running_port cassandra)
    if java_has_module jdk.compiler; then
      write_cql_check "$dir/CqlCheck.java"
      if out=$("$JAVA" -Xmx256m -cp "$lib/*" -Dlogback.configurationFile="file:$dir/tools-logback.xml" \
        "$dir/CqlCheck.java" 127.0.0.1 "$port" "$PARLEY_CASSANDRA_USERNAME" "$PARLEY_CASSANDRA_PASSWORD" 2>&1); then
        say "cassandra: OK, $(printf '%s' "$out" | tail -n 1)"
      else
        printf '%s\n' "$out" >&2
        warn "cassandra: CQL query on 127.0.0.1:$port failed"
        failed=1
      fi
    elif port_open "$port"; then
      say "cassandra: OK, CQL port 127.0.0.1:$port accepts connections (no JDK compiler for a query)"
    else
      warn "cassandra: CQL port 127.0.0.1:$port does not accept connections"
      failed=1
    fi
  else
    warn "cassandra: not running"
    failed=1
  fi
  return "$failed"
}

write_kafka_check() {
  cat >"$1" <<'EOF'
// Generated by deployments/local/stack.sh: an admin-client round trip
// (describe cluster, create, list and delete a topic) with kafka-clients.
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;

public class KafkaCheck {
    public static void main(String[] args) throws Exception {
        String topic = "parley-stack-check-" + ProcessHandle.current().pid();
        Map<String, Object> conf = Map.of(
            AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0],
            AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        try (Admin admin = Admin.create(conf)) {
            String clusterId = admin.describeCluster().clusterId().get();
            int brokers = admin.describeCluster().nodes().get().size();
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
            Set<String> names = admin.listTopics().names().get();
            if (!names.contains(topic)) {
                throw new IllegalStateException("created topic not listed: " + names);
            }
            admin.deleteTopics(List.of(topic)).all().get();
            System.out.println("admin answered: cluster " + clusterId + ", " + brokers
                + " broker(s), created/listed/deleted topic " + topic);
        }
    }
}
EOF
}

write_cql_check() {
  cat >"$1" <<'EOF'
// Generated by deployments/local/stack.sh: one CQL round trip using the
// DataStax 3.x driver that ships inside cassandra-all's dependencies.
import com.datastax.driver.core.Cluster;
import com.datastax.driver.core.Row;
import com.datastax.driver.core.Session;

public class CqlCheck {
    public static void main(String[] args) {
        // Credentials are offered always: a node without logins ignores
        // them.
        try (Cluster cluster = Cluster.builder()
                .addContactPoint(args[0])
                .withPort(Integer.parseInt(args[1]))
                .withCredentials(args[2], args[3])
                .withoutJMXReporting()
                .withoutMetrics()
                .build();
             Session session = cluster.connect()) {
            Row row = session.execute(
                "SELECT release_version, bootstrapped FROM system.local").one();
            String state = row.getString("bootstrapped");
            System.out.println("CQL answered: release_version="
                + row.getString("release_version") + " bootstrapped=" + state);
            if (!"COMPLETED".equals(state)) {
                System.exit(1);
            }
        }
    }
}
EOF
}

write_scram_user() {
  cat >"$1" <<'EOF'
// Generated by deployments/local/stack.sh: adds (or resets) a SCRAM-SHA-512
// user through the admin client: args broker, user, password.
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;

public class ScramUser {
    public static void main(String[] args) throws Exception {
        Map<String, Object> conf = Map.of(
            AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0],
            AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        try (Admin admin = Admin.create(conf)) {
            admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(
                args[1], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), args[2]))).all().get();
        }
    }
}
EOF
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up) cmd_up "$@" ;;
    start)
      [[ $# -ge 1 ]] || die "usage: stack.sh start kafka|cassandra"
      cmd_up "$@"
      ;;
    down) cmd_down "$@" ;;
    stop)
      [[ $# -ge 1 ]] || die "usage: stack.sh stop kafka|cassandra"
      cmd_down "$@"
      ;;
    status) cmd_status ;;
    env) cmd_env ;;
    check) cmd_check ;;
    fetch)
      CACHE_DIR=$(abs_dir "$CACHE_DIR")
      cmd_fetch "$@"
      ;;
    -h | --help | help) usage ;;
    "")
      usage >&2
      exit 2
      ;;
    *)
      usage >&2
      die "unknown command '$cmd'"
      ;;
  esac
}

main "$@"
