# The project's one task runner: the README and CI (.ci/run) call these targets, nothing else.
#
#   make demo    run the local demo (redis + scheduler + a GPU and a CPU agent + a mixed workload)
#   make test    every test tier (unit, integration, e2e, a short chaos run), after checking deps and generated stubs
#   make test-unit  the unit tier only (no Redis, no network; seconds)
#   make chaos   the full chaos suite (100 worker kills, 50 crash points, Redis kill -9, 10,000 fuzzed requests)
#   make lint    ruff + mypy --strict
#   make proto   regenerate the Python and Go stubs from protos/
#   make bench   dispatch benchmark (options: make bench BENCH_ARGS="--before FILE --json OUT")
#   make bench-fleet  fleet simulator: one scheduler, hundreds of simulated agents (capacity, scale)

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.switchyard-installed
PROTO_FILES := $(wildcard protos/switchyard/v1/*.proto) protos/externalscaler/externalscaler.proto
STUBS_DIR := clients/python/switchyard/v1
# KEDA's external scaler contract (vendored, package `externalscaler`): its stubs are a top-level package.
KEDA_STUBS_DIR := clients/python/externalscaler
# The Go client's stubs (clients/go): the same protoc with Debian's protoc-gen-go and
# protoc-gen-go-grpc plugins (make deps-go), written next to the module as switchyard/v1/.
GO_STUBS_DIR := clients/go/switchyard/v1
GO_PROTO_FILES := $(wildcard protos/switchyard/v1/*.proto)
GO_DEBIAN_PACKAGES := golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc
GO_PLUGINS_FOUND := command -v protoc-gen-go >/dev/null 2>&1 && command -v protoc-gen-go-grpc >/dev/null 2>&1
go_protoc = $(PY) -m grpc_tools.protoc -I protos --plugin=protoc-gen-go="$$(command -v protoc-gen-go)" --plugin=protoc-gen-go-grpc="$$(command -v protoc-gen-go-grpc)" --go_out=$(1) --go_opt=paths=source_relative --go-grpc_out=$(1) --go-grpc_opt=paths=source_relative $(GO_PROTO_FILES)
LINT_PATHS := scheduler worker_agent clients/python/switchyard

.DEFAULT_GOAL := help
.PHONY: help venv deps-check deps-prometheus deps-go node-deps demo test test-unit chaos proto proto-check proto-lint proto-breaking proto-baseline lint bench bench-fleet

help:
	@echo "make demo         run the local demo (starts redis, scheduler, two agents; prints a verdict)"
	@echo "make test         run every test tier (needs redis-server)"
	@echo "make test-unit    run the unit tier only (no redis-server, no network)"
	@echo "make chaos        full chaos suite (make test runs a short one); figures to CHAOS_RESULTS=DIR"
	@echo "make lint         ruff check + mypy --strict"
	@echo "make proto        regenerate $(STUBS_DIR) and $(GO_STUBS_DIR) from protos/"
	@echo "make proto-check  fail when the committed stubs differ from a fresh generation"
	@echo "make proto-lint   buf lint (STANDARD + COMMENTS) on protos/ (installs buf from npm into .tools/)"
	@echo "make proto-breaking  buf breaking: fail when protos/ breaks the landed contract ($(PROTO_BASELINE))"
	@echo "make proto-baseline  record protos/ as the landed contract (after a reviewed contract change)"
	@echo "make bench        dispatch benchmark"
	@echo "make bench-fleet  fleet simulator: scheduler capacity, 1,000-agent connect storm, 1M-task backlog"
	@echo "make venv         create $(VENV) and install the project with its dev extras"
	@echo "make deps-check   make sure redis-server and openssl are installed"
	@echo "make deps-prometheus  make sure prometheus and promtool are installed (apt-get when root)"
	@echo "make deps-go      make sure Go and Debian's gRPC-Go packages are installed (apt-get when root)"
	@echo "make node-deps    install the Node client's npm packages into clients/node/node_modules (npm ci)"

# Re-installs whenever pyproject.toml changes (new dependency, new console script).
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

deps-check:
	@if command -v redis-server >/dev/null 2>&1; then \
		echo "deps-check: redis-server found at $$(command -v redis-server)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps-check: redis-server missing; installing it with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; \
	else \
		echo "deps-check: error: redis-server is not on PATH. Install it, then re-run:" >&2; \
		echo "  Debian/Ubuntu:  sudo apt-get install -y redis-server" >&2; \
		echo "  Fedora/RHEL:    sudo dnf install -y redis" >&2; \
		echo "  macOS:          brew install redis" >&2; \
		exit 1; \
	fi
	@# The TLS tests make their certificates with the openssl command (tests/support/certs.py).
	@if command -v openssl >/dev/null 2>&1; then \
		echo "deps-check: openssl found at $$(command -v openssl)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps-check: openssl missing; installing it with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y openssl; \
	else \
		echo "deps-check: error: the openssl command is not on PATH; install it (apt-get install -y openssl)" >&2; \
		exit 1; \
	fi

# Prometheus and promtool (Debian package `prometheus`) for the metrics tests: a real Prometheus
# scrapes a live scheduler (tests/e2e/test_prometheus.py), promtool checks and unit-tests the
# alert rules (tests/deploy/test_prometheus_rules.py). Installed with apt-get when root; elsewhere
# those tests are skipped and say how to install it.
deps-prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then \
		echo "deps-prometheus: prometheus and promtool found at $$(command -v prometheus), $$(command -v promtool)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps-prometheus: prometheus/promtool missing; installing the prometheus package with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
	else \
		echo "deps-prometheus: warning: prometheus/promtool not found and not installable here (needs root and apt-get);" >&2; \
		echo "  the Prometheus tests will be skipped. Install: sudo apt-get install prometheus" >&2; \
	fi

# Go and Debian's gRPC-Go/protobuf-Go packages for the Go client (clients/go builds offline from
# them: clients/go/tools/debian-vendor.sh) and the protoc plugins make proto runs. Installed with
# apt-get when root; elsewhere the Go client's tests are skipped, saying what is missing.
deps-go:
	@missing=$$(for package in $(GO_DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$package 2>/dev/null | grep -q 'install ok installed' || echo $$package; \
	done | tr '\n' ' '); \
	if [ -z "$$missing" ]; then \
		echo "deps-go: Go $$(go env GOVERSION) and Debian's Go gRPC packages found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps-go: installing $$missing with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else \
		echo "deps-go: warning: missing $$missing(needs root and apt-get); the Go client tests will be skipped." >&2; \
		echo "  Install: sudo apt-get install $(GO_DEBIAN_PACKAGES)" >&2; \
	fi

# The Node client's npm packages (clients/node: @grpc/grpc-js and @grpc/proto-loader, plus
# typescript to check its types), installed from its package-lock.json with npm ci, again only when
# the lock file changed. Node.js and npm come from apt-get when root; elsewhere, without npm, the
# Node client's tests are skipped (tests/support/node.py says so).
NODE_CLIENT_DIR := clients/node
node-deps:
	@if ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "node-deps: npm missing; installing nodejs and npm with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm; \
	fi; \
	if ! command -v npm >/dev/null 2>&1; then \
		echo "node-deps: warning: npm not found; the Node client tests will be skipped. Install: sudo apt-get install nodejs npm" >&2; \
	elif [ $(NODE_CLIENT_DIR)/node_modules/.package-lock.json -nt $(NODE_CLIENT_DIR)/package-lock.json ]; then \
		echo "node-deps: $(NODE_CLIENT_DIR)/node_modules is up to date"; \
	else \
		npm ci --no-audit --no-fund --prefix $(NODE_CLIENT_DIR) && echo "node-deps: installed $(NODE_CLIENT_DIR)/node_modules"; \
	fi

demo: venv deps-check
	$(PY) examples/demo.py

# The suite runs in TEST_WORKERS processes at once (pytest-xdist, one test file per process at a
# time; each process picks ports from its own range). Most of the suite's time is spent waiting
# on the processes it starts, so two processes nearly halve it on two cores. TEST_WORKERS=0 runs
# every test in one process, one after the other.
TEST_WORKERS ?= 2

# pytest exits 5 when it collects no tests; that fails the target like any other non-zero status.
test: venv deps-check deps-prometheus deps-go node-deps proto-check proto-lint proto-breaking
	@status=0; $(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile tests || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: error: pytest collected no tests" >&2; fi; \
	exit $$status

# The unit tier needs neither redis-server nor the generated-stub checks: quick feedback while editing.
test-unit: venv
	$(PY) -m pytest -q tests/unit

# The chaos suite at full size (make test runs it short). CHAOS_RESULTS=DIR keeps the figures it
# measures as JSON; CHAOS_SEED=N replays the fuzzer with another seed.
chaos: venv deps-check
	CHAOS_FULL=1 $(PY) -m pytest -q -ra tests/chaos

proto: venv
	$(PY) -m grpc_tools.protoc -I protos --python_out=clients/python --grpc_python_out=clients/python --pyi_out=clients/python $(PROTO_FILES)
	@if $(GO_PLUGINS_FOUND); then \
		$(call go_protoc,clients/go) && echo "proto: regenerated $(GO_STUBS_DIR)"; \
	else \
		echo "proto: warning: $(GO_STUBS_DIR) NOT regenerated: protoc-gen-go/protoc-gen-go-grpc not found (make deps-go installs them)" >&2; \
	fi
	@if [ -d $(NODE_CLIENT_DIR)/node_modules/@grpc/proto-loader ]; then \
		node $(NODE_CLIENT_DIR)/scripts/gen-types.js; \
	else \
		echo "proto: warning: $(NODE_CLIENT_DIR)/messages.d.ts NOT regenerated: its npm packages are missing (make node-deps)" >&2; \
	fi

proto-check: venv
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PY) -m grpc_tools.protoc -I protos --python_out="$$tmp" --grpc_python_out="$$tmp" --pyi_out="$$tmp" $(PROTO_FILES) || exit 1; \
	if diff -r -x __pycache__ -x __init__.py "$$tmp/switchyard/v1" $(STUBS_DIR) && \
	   diff -r -x __pycache__ -x __init__.py "$$tmp/externalscaler" $(KEDA_STUBS_DIR); then \
		echo "proto-check: generated stubs are up to date"; \
	else \
		echo "proto-check: error: $(STUBS_DIR) or $(KEDA_STUBS_DIR) is stale against protos/; run make proto and commit the result" >&2; \
		exit 1; \
	fi; \
	if ! $(GO_PLUGINS_FOUND); then \
		echo "proto-check: SKIPPED $(GO_STUBS_DIR): protoc-gen-go/protoc-gen-go-grpc not found (make deps-go installs them)"; \
	elif mkdir "$$tmp/go" && $(call go_protoc,"$$tmp/go") && diff -r "$$tmp/go/switchyard/v1" $(GO_STUBS_DIR); then \
		echo "proto-check: Go stubs are up to date"; \
	else \
		echo "proto-check: error: $(GO_STUBS_DIR) is stale against protos/; run make proto and commit the result" >&2; \
		exit 1; \
	fi
	@if [ -d $(NODE_CLIENT_DIR)/node_modules/@grpc/proto-loader ]; then \
		node $(NODE_CLIENT_DIR)/scripts/gen-types.js --check && echo "proto-check: $(NODE_CLIENT_DIR)/messages.d.ts is up to date"; \
	else \
		echo "proto-check: SKIPPED $(NODE_CLIENT_DIR)/messages.d.ts: its npm packages are missing (make node-deps)"; \
	fi

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS) examples bench tests
	$(VENV)/bin/mypy $(LINT_PATHS)

bench: venv
	$(PY) bench/bench_dispatch.py $(BENCH_ARGS)

bench-fleet: venv deps-check
	$(PY) bench/bench_fleet.py

# buf lint keeps the contract tidy for other languages. buf ships inside the npm package
# @bufbuild/buf; it is installed once into .tools/. Without npm the check is skipped, loudly.
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
$(BUF):
	@mkdir -p .tools
	npm install --silent --prefix .tools @bufbuild/buf@$(BUF_VERSION)

proto-lint:
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(BUF) && cd protos && ../$(BUF) lint && echo "proto-lint: buf lint passed"; \
	else \
		echo "proto-lint: SKIPPED: npm not found (install Node.js to lint protos with buf)"; \
	fi

# buf breaking (FILE rules, protos/buf.yaml) against the landed contract, committed as a buf image:
# a committed file works offline and in a fresh clone (no git history or branch needed) and makes
# a contract change visible in review. Additions pass; a renumbered, retyped or removed field,
# message, enum value or RPC fails. After a reviewed change lands, `make proto-baseline`
# records it. tests/unit/test_proto_contract.py proves a breaking change fails the check.
PROTO_BASELINE := protos/baseline.binpb

proto-breaking:
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(BUF) && cd protos && ../$(BUF) breaking --against ../$(PROTO_BASELINE) \
		&& echo "proto-breaking: no breaking change against $(PROTO_BASELINE)"; \
	else \
		echo "proto-breaking: SKIPPED: npm not found (install Node.js to check the contract with buf)"; \
	fi

proto-baseline:
	$(MAKE) --no-print-directory $(BUF)
	cd protos && ../$(BUF) build -o ../$(PROTO_BASELINE)
	@echo "proto-baseline: wrote $(PROTO_BASELINE); commit it with the contract change"
