# Parley. `make run` and `make test` are the two commands that matter; the
# rest are their parts.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin
GO_DIRS := pkg services cmd

# The commit and version every binary reports in parley_build_info. A go
# build in the go.work workspace stamps no VCS information (checked with
# go version -m), so they are passed to the linker; a tree with changes
# not committed reports <commit>-dirty.
PARLEY_COMMIT ?= $(shell if c=$$(git rev-parse HEAD 2>/dev/null); then git diff --quiet HEAD -- 2>/dev/null || c=$$c-dirty; echo $$c; else echo unknown; fi)
PARLEY_VERSION ?= devel
GO_LDFLAGS := -X github.com/parleychat/parley/pkg/server/metrics.Commit=$(PARLEY_COMMIT) \
	-X github.com/parleychat/parley/pkg/server/metrics.Version=$(PARLEY_VERSION)

# Code generators, pinned and installed into bin/ with `go install`.
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
# grpcurl runs docs/BACKEND_API.md's examples in the tests (TestBackendAPIDocExamples).
GRPCURL_VERSION := v1.9.4
# helm for `make helm-check`, built from source like the generators. The
# Kubernetes version it renders for and validates against follows k8s.io/api
# in cmd/go.mod (v0.37.2: Kubernetes v1.37.2).
HELM_VERSION := v3.21.4

# Budgets are counts of executions, not durations: with a duration, Go
# 1.26's fuzz coordinator can report "context deadline exceeded" at the
# deadline on a busy machine with no failing input (golang/go#75804, fixed
# in Go 1.27). 60,000 runs take 4-12 s per target here, about 40 s for
# FuzzApplyRecords. Minimizing each new input is bounded by a count too:
# the default, 60 s each, stalled FuzzApplyRecords for minutes at a time.
FUZZTIME ?= 60000x
FUZZMINIMIZE ?= 500x
FUZZ_LONG ?= 2000000x
# Fuzz targets as package:Func.
FUZZ_TARGETS := ./pkg/wire:FuzzDecodeClient ./services/ingest:FuzzSequencerRecords ./services/ingest:FuzzOutcomeRecords ./services/fanout:FuzzPlanRecords \
	./services/persistence:FuzzApplyRecords ./services/presence:FuzzPresenceRecords ./pkg/server/tracing:FuzzExtract \
	./services/edge:FuzzFrameCursor

.PHONY: help
help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: run
run: ## run the whole platform on embedded defaults (kfake + Pebble) on http://127.0.0.1:8080
	go build -ldflags "$(GO_LDFLAGS)" -o $(BIN)/parley ./cmd/parley
	exec $(BIN)/parley run

.PHONY: smoke
smoke: ## scripted conversation against the platform `make run` started
	go run ./cmd/parley smoke

.PHONY: build
build: ## build every binary into bin/
	go build -ldflags "$(GO_LDFLAGS)" -o $(BIN)/ ./cmd/parley ./services/edge/cmd/parley-edge ./services/ingest/cmd/parley-ingest \
		./services/fanout/cmd/parley-fanout ./services/persistence/cmd/parley-persistence ./services/presence/cmd/parley-presence

$(BIN)/buf:
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/grpcurl:
	GOBIN=$(BIN) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
PROTO_TOOLS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
# The JavaScript SDK's generator (protoc-gen-es) and runtime come from npm,
# pinned by sdk/js/package-lock.json; npm ci rewrites this hidden lockfile,
# so it marks an install as current.
SDK_JS_MODULES := sdk/js/node_modules/.package-lock.json
$(SDK_JS_MODULES): sdk/js/package-lock.json
	cd sdk/js && npm ci --no-audit --no-fund

.PHONY: proto
proto: $(PROTO_TOOLS) $(SDK_JS_MODULES) ## lint the .proto files and regenerate pkg/pb and sdk/js/gen
	$(BIN)/buf lint
	$(BIN)/buf generate
	$(BIN)/buf generate --template buf.gen.js.yaml

.PHONY: proto-check
proto-check: proto ## fail if regenerating changes the committed code (pkg/pb, sdk/js/gen), or if a .proto change breaks the wire
	@if [ -n "$$(git status --porcelain -- pkg/pb sdk/js/gen)" ]; then \
		echo "generated code is stale: run 'make proto' and commit pkg/pb and sdk/js/gen"; git status --short -- pkg/pb sdk/js/gen; exit 1; fi
	@if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
		$(BIN)/buf breaking --against '.git#ref=HEAD~1'; fi

# In a folder per version, so that changing HELM_VERSION installs the new
# one. The first build takes a few minutes; later ones come from the Go
# build cache. -X sets the version `helm version` prints.
HELM := $(BIN)/helm/$(HELM_VERSION)/helm
$(HELM):
	GOBIN=$(dir $(HELM)) go install -ldflags "-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

.PHONY: helm-check
helm-check: $(HELM) ## lint and render helm/parley with each values file in helm/parley/ci; check every object against k8s.io/api and the OpenAPI schema
	go run ./cmd/internal/helmcheck -helm $(HELM) -chart helm/parley

.PHONY: lint
lint: ## gofmt and go vet over every module; the SDK's module stays free of server dependencies
	@unformatted=$$(gofmt -l $(GO_DIRS)); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@if grep -nE 'twmb/franz-go|prometheus|opentelemetry' pkg/go.mod; then \
		echo "pkg/go.mod (the module apps import for the SDK) requires a server dependency: keep it in pkg/server"; exit 1; fi
	go vet work

.PHONY: unit
unit: ## unit and in-process end-to-end tests only (skips what needs the real stack)
	go test -race -count=1 work

.PHONY: test-all
# Tests that stop a shared server (PARLEY_STACK_CONTROL=1) run after all
# the others, alone.
STACK_CONTROL_TESTS := TestCassandraOutage|TestSequencerAcrossKafkaRestarts
test-all: $(BIN)/grpcurl ## every Go test, with real Kafka and Cassandra up (started and stopped if needed)
	bash deployments/local/with-stack.sh bash -c '\
		go test -race -count=1 -timeout 20m -skip "^($(STACK_CONTROL_TESTS))$$" work && \
		PARLEY_STACK_CONTROL=1 go test -race -count=1 -timeout 10m -run "^($(STACK_CONTROL_TESTS))$$" -v ./services/integration'


.PHONY: web-test
# The page's browser tests (web/test): playwright-core drives Debian's
# Chromium (PARLEY_CHROMIUM to use another) against a `parley run` of
# their own; screenshots land in web/test/artifacts.
web-test: ## the web page at 390 and 1280 px and unread across devices, in Chromium (needs node, npm, /usr/bin/chromium)
	cd web/test && npm ci --no-audit --no-fund && { npm test || { echo 'the last lines of parley run:'; tail -n 60 artifacts/parley-run-*.log; exit 1; }; }

# TestCrashLoop (cmd/parley) runs in test-all with its default of 10
# rounds; this is the same test with many more kills on one data folder.
CRASH_ROUNDS ?= 50
.PHONY: crash
crash: ## kill -9 `parley run` CRASH_ROUNDS (50) times mid-traffic, checking every guarantee after each restart (PARLEY_CRASH_SEED replays)
	PARLEY_CRASH_ROUNDS=$(CRASH_ROUNDS) go test -count=1 -run '^TestCrashLoop$$' -v -timeout 60m ./cmd/parley

# TestSequencerAcrossKafkaRestarts restarts the broker once in test-all;
# this is the same test with eight restarts.
KAFKA_RESTARTS ?= 8
.PHONY: kafka-restarts
kafka-restarts: ## restart the real broker KAFKA_RESTARTS (8) times under two sequencers; every acknowledged command must be on the log
	bash deployments/local/with-stack.sh env PARLEY_STACK_CONTROL=1 PARLEY_KAFKA_RESTARTS=$(KAFKA_RESTARTS) \
		go test -count=1 -run '^TestSequencerAcrossKafkaRestarts$$' -v -timeout 20m ./services/integration

.PHONY: sdk-js-test
sdk-js-test: ## the JavaScript SDK (sdk/js): npm ci, its types, and its tests against a real `parley run`
	cd sdk/js && npm ci --no-audit --no-fund && npm test

.PHONY: fuzz-short
fuzz-short: ## each fuzz target for FUZZTIME (60,000 runs)
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn for $(FUZZTIME)"; go test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg; done

.PHONY: fuzz
fuzz: ## each fuzz target for FUZZ_LONG (2,000,000 runs, minutes each)
	$(MAKE) fuzz-short FUZZTIME=$(FUZZ_LONG)

# The chaos runs stop and start the stack's Kafka and Cassandra
# (PARLEY_STACK_CONTROL=1), so they run alone: in `make test` after
# test-all, never beside other tests. A missing stack is started, and a
# stack that cannot start fails the run: nothing is skipped.
CHAOS_DURATION ?= 5m
CHAOS_REPORT ?= bench/results/chaos.json
# More flags for both, e.g. CHAOS_FLAGS='-keep-logs -seed 42'.
CHAOS_FLAGS ?=
.PHONY: chaos chaos-short
chaos: ## chaos run on the real stack: 2 of each service, 200 devices, kill -9 every 5 s, a broker restart, Cassandra down 20 s (CHAOS_DURATION=5m); report in bench/results/chaos.json
	bash deployments/local/with-stack.sh env PARLEY_STACK_CONTROL=1 \
		go run ./cmd/parley-chaos -duration $(CHAOS_DURATION) -report $(CHAOS_REPORT) $(CHAOS_FLAGS)
chaos-short: ## the chaos run in short mode (60 devices, 1 minute of faults, about 2 minutes), part of make test
	bash deployments/local/with-stack.sh env PARLEY_STACK_CONTROL=1 \
		go run ./cmd/parley-chaos -short -report "$${TMPDIR:-/tmp}/parley-chaos-short.json" $(CHAOS_FLAGS)

.PHONY: test
test: proto-check lint helm-check sdk-js-test web-test test-all chaos-short fuzz-short ## everything CI runs
	@echo "make test: all green"

.PHONY: run-stack
run-stack: ## every service as its own process on the real local stack, page on http://127.0.0.1:8080
	bash deployments/local/run-stack.sh

.PHONY: up down status
up: ## start real Kafka and Cassandra on loopback (deployments/local)
	bash deployments/local/stack.sh up
down: ## stop them
	bash deployments/local/stack.sh down
status: ## what runs
	bash deployments/local/stack.sh status

.PHONY: bench bench-short
# The stack is started if needed and left running (make down stops it).
bench: ## load benchmark on the real stack: bench/results/latest.{json,png}; BENCH_DURATION=20s for a short run
	bash deployments/local/stack.sh up
	set -a && eval "$$(bash deployments/local/stack.sh env)" && set +a && go run ./cmd/parley-bench
bench-short: ## the same in short mode (BENCH_DURATION=20s, a 2,000-device storm)
	BENCH_DURATION=20s BENCH_STORM_DEVICES=$${BENCH_STORM_DEVICES:-2000} $(MAKE) --no-print-directory bench
