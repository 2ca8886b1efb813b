# The project's one task runner: the README and CI (.ci/run) call these targets, nothing else.
#
#   make demo    run the local demo (redis + scheduler + a GPU and a CPU agent + a mixed workload)
#   make test    every test tier (unit, integration, e2e, a short chaos run), after checking deps and generated stubs
#   make test-unit  the unit tier only (no Redis, no network; seconds)
#   make chaos   the full chaos suite (100 worker kills, 50 crash points, Redis kill -9, 10,000 fuzzed requests)
#   make lint    ruff + mypy --strict
#   make proto   regenerate the Python stubs from protos/
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
LINT_PATHS := scheduler worker_agent clients/python/switchyard

.DEFAULT_GOAL := help
.PHONY: help venv deps-check deps-prometheus demo test test-unit chaos proto proto-check proto-lint lint bench bench-fleet

help:
	@echo "make demo         run the local demo (starts redis, scheduler, two agents; prints a verdict)"
	@echo "make test         run every test tier (needs redis-server)"
	@echo "make test-unit    run the unit tier only (no redis-server, no network)"
	@echo "make chaos        full chaos suite (make test runs a short one); figures to CHAOS_RESULTS=DIR"
	@echo "make lint         ruff check + mypy --strict"
	@echo "make proto        regenerate $(STUBS_DIR) from protos/"
	@echo "make proto-check  fail when the committed stubs differ from a fresh generation"
	@echo "make proto-lint   buf lint (STANDARD) on protos/ (installs buf from npm into .tools/)"
	@echo "make bench        dispatch benchmark"
	@echo "make bench-fleet  fleet simulator: scheduler capacity, 1,000-agent connect storm, 1M-task backlog"
	@echo "make venv         create $(VENV) and install the project with its dev extras"
	@echo "make deps-check   make sure redis-server is installed"
	@echo "make deps-prometheus  make sure prometheus and promtool are installed (apt-get when root)"

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

demo: venv deps-check
	$(PY) examples/demo.py

# pytest exits 5 when it collects no tests; that fails the target like any other non-zero status.
test: venv deps-check deps-prometheus proto-check proto-lint
	@status=0; $(PY) -m pytest -q -ra tests || status=$$?; \
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

proto-check: venv
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PY) -m grpc_tools.protoc -I protos --python_out="$$tmp" --grpc_python_out="$$tmp" --pyi_out="$$tmp" $(PROTO_FILES) || exit 1; \
	if diff -r -x __pycache__ -x __init__.py "$$tmp/switchyard/v1" $(STUBS_DIR) && \
	   diff -r -x __pycache__ -x __init__.py "$$tmp/externalscaler" $(KEDA_STUBS_DIR); then \
		echo "proto-check: generated stubs are up to date"; \
	else \
		echo "proto-check: error: $(STUBS_DIR) or $(KEDA_STUBS_DIR) is stale against protos/; run make proto and commit the result" >&2; \
		exit 1; \
	fi

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS) examples
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
