# delegation-service build, lint and test entry points. GNU make; works from a fresh clone:
# `make test` creates .venv, generates the gRPC stubs, installs the project and runs the suite.
# `make` alone lists the targets.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip --disable-pip-version-check
# Extra arguments for every pytest run, e.g. `make unit-tests PYTEST_ARGS='-x -k scopes'`.
PYTEST_ARGS ?=
# Extra arguments for `make bench`, e.g. `make bench BENCH_ARGS='--quick'` (see `python -m bench --help`).
BENCH_ARGS ?=
# Extra arguments for the edge propagation bench, e.g. EDGE_BENCH_ARGS='--quick' (python -m bench.edge --help).
EDGE_BENCH_ARGS ?=
# Extra arguments for the OAuth HTTP bench, e.g. OAUTH_BENCH_ARGS='--quick' (python -m bench.oauth --help).
OAUTH_BENCH_ARGS ?=
# Examples per Hypothesis property for `make fuzz`.
FUZZ_EXAMPLES ?= 10000
# Seconds of libFuzzer-style fuzzing (random byte buffers into tests/fuzz/targets.py) for `make fuzz`.
FUZZ_SECONDS ?= 120

PROTO_DIR := protos/delegation/v1
PROTOS := $(wildcard $(PROTO_DIR)/*.proto)

# Stamps record that a step is done and what it depends on. The venv ones live in the venv (removing
# it redoes them); the stub stamp lives in the generated, git-ignored package.
CODEGEN_STAMP := $(VENV)/.stamp-codegen
STUBS_STAMP := delegation/.stamp-generated
# One stamp per pyproject extra: `make run` needs only the runtime one; each other target adds the
# extra it uses (RUN_STAMP: the project alone; TEST/LINT/BENCH_STAMP: that extra; INSTALL_STAMP: dev).
RUN_STAMP := $(VENV)/.stamp-install-run
TEST_STAMP := $(VENV)/.stamp-install-test
LINT_STAMP := $(VENV)/.stamp-install-lint
BENCH_STAMP := $(VENV)/.stamp-install-bench
LOCK_STAMP := $(VENV)/.stamp-install-lock
CONTAINER_STAMP := $(VENV)/.stamp-install-container
INSTALL_STAMP := $(VENV)/.stamp-install-dev

# ---------------------------------------------------------------------------------------------------
##@ Setup

.PHONY: help
help: ## Show this list of targets
	@awk 'BEGIN { FS = ":.*## " } \
		/^##@/ { printf "\n%s\n", substr($$0, 5); next } \
		/^[a-zA-Z0-9_-]+:.*## / { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: PYTHON=$(PYTHON) (3.11+, makes the venv)  PYTEST_ARGS=...  FUZZ_EXAMPLES=$(FUZZ_EXAMPLES)  FUZZ_SECONDS=$(FUZZ_SECONDS)"

.PHONY: venv
venv: $(PY) ## Create .venv with PYTHON (default python3; must be 3.11+)

.PHONY: install
install: $(INSTALL_STAMP) ## Create .venv with the dev extra: codegen, test, lint and bench (generates the stubs first)

.PHONY: install-run
install-run: $(RUN_STAMP) ## Create .venv with the run-time dependencies only (what `make run` needs)

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "error: '$(PYTHON)' not found; set PYTHON=/path/to/python3.11+" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: delegation-service needs Python 3.11+, but $(PYTHON) is $$($(PYTHON) -V 2>&1); set PYTHON=..." >&2; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)

# The stub generator is installed on its own first: the stubs must exist before the editable install,
# because setuptools' editable finder only maps the top-level packages present at install time (a
# `delegation` package generated later would not be importable from outside the repo root).
$(CODEGEN_STAMP): pyproject.toml scripts/pyproject_requirements.py | $(PY)
	$(PY) scripts/pyproject_requirements.py --extra codegen >$(VENV)/codegen-requirements.txt
	$(PY) scripts/pyproject_requirements.py --only grpcio-reflection >>$(VENV)/codegen-requirements.txt
	$(PIP) install -r $(VENV)/codegen-requirements.txt
	@touch $@

# The project itself (editable) with its run-time dependencies, then each extra's requirements on
# top (read from pyproject.toml, its self-references expanded), so adding an extra never rebuilds the
# editable install. `make install` (dev) holds the test, lint and bench extras, so it stands for their stamps.
$(RUN_STAMP): pyproject.toml $(CODEGEN_STAMP) | $(STUBS_STAMP)
	$(PIP) install -e .
	@touch $@

# install_extra NAME: pip install the requirements of the pyproject extra NAME.
define install_extra
	$(PY) scripts/pyproject_requirements.py --extra $(1) >$(VENV)/$(1)-requirements.txt
	$(PIP) install -r $(VENV)/$(1)-requirements.txt
endef

$(TEST_STAMP): pyproject.toml scripts/pyproject_requirements.py $(RUN_STAMP)
	$(call install_extra,test)
	@touch $@

$(LINT_STAMP): pyproject.toml scripts/pyproject_requirements.py $(RUN_STAMP)
	$(call install_extra,lint)
	@touch $@

$(BENCH_STAMP): pyproject.toml scripts/pyproject_requirements.py $(RUN_STAMP)
	$(call install_extra,bench)
	@touch $@

$(LOCK_STAMP): pyproject.toml scripts/pyproject_requirements.py $(RUN_STAMP)
	$(call install_extra,lock)
	@touch $@

$(CONTAINER_STAMP): pyproject.toml scripts/pyproject_requirements.py $(RUN_STAMP)
	$(call install_extra,container)
	@touch $@

$(INSTALL_STAMP): pyproject.toml scripts/pyproject_requirements.py $(RUN_STAMP)
	$(call install_extra,dev)
	@touch $@ $(TEST_STAMP) $(LINT_STAMP) $(BENCH_STAMP)

# ---------------------------------------------------------------------------------------------------
##@ Code generation

.PHONY: proto
proto: $(STUBS_STAMP) ## Generate delegation/v1/ stubs from protos/ (only when a .proto changed)

# Depending on the directory too catches an added, removed or renamed .proto.
$(STUBS_STAMP): $(PROTOS) $(PROTO_DIR) scripts/gen-protos scripts/reflection_v1_descriptor.py $(CODEGEN_STAMP)
	scripts/gen-protos $(PY)
	@touch $@

# ---------------------------------------------------------------------------------------------------
##@ Quality

.PHONY: lint
lint: lint-python typecheck lint-proto lint-docker ## All linters (`make -k lint` reports every failure)

.PHONY: lint-python
lint-python: $(LINT_STAMP) ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: format
format: $(LINT_STAMP) ## Apply ruff's fixes and formatting, and buf format, in place
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/buf format -w

.PHONY: typecheck
typecheck: $(LINT_STAMP) $(STUBS_STAMP) ## mypy --strict (configured in pyproject.toml)
	$(BIN)/mypy

.PHONY: lint-proto
lint-proto: $(LINT_STAMP) ## buf lint, buf format check, buf breaking against main (off main only)
	$(BIN)/buf lint
	$(BIN)/buf format -d --exit-code
	@$(MAKE) --no-print-directory proto-breaking

# Compares with the local main branch, and only where that comparison means something: on a branch
# other than main, in a git checkout whose main has protos. Anything else skips with a reason.
.PHONY: proto-breaking
proto-breaking: $(LINT_STAMP)
	@if ! git rev-parse --git-dir >/dev/null 2>&1; then \
		echo "buf breaking: skipped (not a git checkout)"; \
	elif ! git rev-parse --verify --quiet refs/heads/main >/dev/null; then \
		echo "buf breaking: skipped (no local main branch)"; \
	elif [[ "$$(git symbolic-ref --quiet --short HEAD || true)" == main ]]; then \
		echo "buf breaking: skipped (on main itself)"; \
	elif ! git ls-tree -r --name-only main -- protos | grep -q '\.proto$$'; then \
		echo "buf breaking: skipped (main has no protos yet)"; \
	else \
		echo "$(BIN)/buf breaking --against '.git#branch=main'"; \
		$(BIN)/buf breaking --against '.git#branch=main'; \
	fi

.PHONY: lint-docker
lint-docker: $(LINT_STAMP) ## hadolint the Dockerfile (and the image test's Redis stand-in)
	$(BIN)/hadolint Dockerfile tests/container/redis-standin/Containerfile

# ---------------------------------------------------------------------------------------------------
##@ Tests

TEST_DEPS := $(TEST_STAMP) $(STUBS_STAMP)
BENCH_DEPS := $(BENCH_STAMP) $(STUBS_STAMP)
OIDC_NODE_DIR := devtools/oidc-provider-node
OIDC_NODE_STAMP := $(OIDC_NODE_DIR)/node_modules/.stamp-npm-ci

.PHONY: test
# The whole suite includes tests/bench, which runs `python -m bench --quick`: the bench extra too.
test: $(TEST_DEPS) $(BENCH_STAMP) oidc-provider-node ## The whole suite in one pytest run (needs redis-server for integration tests)
	scripts/run-pytest tests $(PYTEST_ARGS)

# tests/e2e/test_real_openid_provider.py starts panva's oidc-provider, pinned by the package-lock; npm ci
# runs again only when package.json or the lock changes. Without npm the tests skip (they say why).
.PHONY: oidc-provider-node
oidc-provider-node: ## npm ci the real OpenID provider that the e2e tests start (a note, not an error, without npm)
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(OIDC_NODE_STAMP); \
	else echo "note: npm not found: the real OpenID provider tests will be skipped" >&2; fi

$(OIDC_NODE_STAMP): $(OIDC_NODE_DIR)/package.json $(OIDC_NODE_DIR)/package-lock.json
	cd $(OIDC_NODE_DIR) && npm ci --no-audit --no-fund
	@touch $@

.PHONY: unit-tests
unit-tests: $(TEST_DEPS) ## tests/unit: pure domain and service logic
	scripts/run-pytest tests/unit $(PYTEST_ARGS)

.PHONY: contract-tests
contract-tests: $(TEST_DEPS) ## tests/contract: the shared suite every port implementation passes
	scripts/run-pytest tests/contract $(PYTEST_ARGS)

.PHONY: integration-tests
integration-tests: $(TEST_DEPS) ## tests/integration: real server and a real redis-server
	scripts/run-pytest tests/integration $(PYTEST_ARGS)

.PHONY: e2e-tests
e2e-tests: $(TEST_DEPS) oidc-provider-node ## tests/e2e: the service end to end through the generated stubs
	scripts/run-pytest tests/e2e $(PYTEST_ARGS)

# Installs from the registries (pip builds clients/python, npm ci the Node example), so it is not part
# of `make test`; .ci/run calls it right after.
.PHONY: interop
interop: $(TEST_DEPS) $(LINT_STAMP) ## The Python client package (pip) and the Node example (npm ci) against a live dev server
	@command -v node >/dev/null && command -v npm >/dev/null || { \
		echo "error: make interop needs Node 20+ and npm on PATH" >&2; exit 1; }
	DELEGATION_INTEROP=1 scripts/run-pytest tests/interop $(PYTEST_ARGS)

.PHONY: fuzz
fuzz: $(TEST_DEPS) ## Hypothesis properties (FUZZ_EXAMPLES each; JWT differential too), then FUZZ_SECONDS s of the targets (raw bytes too)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) PYTHONPATH=scripts \
		scripts/run-pytest tests -p hypothesis_fuzz --hypothesis-profile=fuzz -m hypothesis --timeout=0 $(PYTEST_ARGS)
	$(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

# ---------------------------------------------------------------------------------------------------
##@ Run

.PHONY: run
run: $(RUN_STAMP) $(STUBS_STAMP) ## Start the dev server (delegation-service dev); installs the run-time dependencies only
	$(BIN)/delegation-service dev

.PHONY: bench
bench: $(BENCH_DEPS) ## Benchmark vs the stack's floor (needs redis-server); BENCH_ARGS='--quick', '--profile'...
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.edge $(EDGE_BENCH_ARGS)
	$(PY) -m bench.oauth $(OAUTH_BENCH_ARGS)

# Real redis-server and redis-server --sentinel processes on loopback ports; bounded, under 3 minutes.
.PHONY: faults
faults: $(BENCH_DEPS) ## Redis stalled 3 s under 64 calls in flight; Sentinel failover loss with/without WAIT
	timeout 180 $(PY) -m bench.faults

.PHONY: bench-jwks
bench-jwks: $(BENCH_DEPS) ## Trusted issuers by URL: fetches under 1,000 concurrent unknown-kid calls, rotation to acceptance
	$(PY) -m bench.jwks $(BENCH_ARGS)

# ---------------------------------------------------------------------------------------------------
##@ Container

# The image, built with docker when its daemon answers, else podman (CONTAINER_ENGINE=... to choose).
IMAGE ?= delegation-service:local
CONTAINER_ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; elif command -v podman >/dev/null; then echo podman; fi)
# The image's lock files (every package pinned, with the hashes of all its wheels, for CPython 3.11 on
# any platform) resolved by uv from pyproject.toml: image.txt the run-time dependencies and the fast-http
# extra (so oauth.server = "granian" is a setting away in the image, which has no pip), build.txt the
# build stage's tools (stub generator, grpcio-reflection for the v1 descriptor, the build backend).
LOCKS := requirements/image.txt requirements/build.txt
UV_COMPILE := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--no-strip-markers --custom-compile-command 'make lock'

.PHONY: lock
lock: $(LOCK_STAMP) ## Regenerate requirements/*.txt, the image's hashed lock files, from pyproject.toml
	mkdir -p requirements
	{ $(PY) scripts/pyproject_requirements.py; \
	  $(PY) scripts/pyproject_requirements.py --extra fast-http; } >$(VENV)/image.in
	{ $(PY) scripts/pyproject_requirements.py --extra codegen; \
	  $(PY) scripts/pyproject_requirements.py --only grpcio-reflection; \
	  $(PY) scripts/pyproject_requirements.py --build-system; } >$(VENV)/build.in
	$(UV_COMPILE) --output-file requirements/image.txt $(VENV)/image.in
	$(UV_COMPILE) --output-file requirements/build.txt $(VENV)/build.in

# --format docker keeps the HEALTHCHECK (podman's OCI format drops it); --network host lets the RUN
# steps reach the package index the way the host does.
.PHONY: image
image: ## Build the image as IMAGE (default delegation-service:local) with docker or podman
	@[[ -n "$(CONTAINER_ENGINE)" ]] || { echo "error: make image needs docker (with its daemon) or podman" >&2; exit 1; }
	$(CONTAINER_ENGINE) build $(if $(filter podman,$(CONTAINER_ENGINE)),--format docker) --network host \
		--build-arg REVISION="$$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
		--build-arg CREATED="$$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		-t $(IMAGE) .

.PHONY: image-test
image-test: image $(TEST_DEPS) $(CONTAINER_STAMP) ## Build the image, run it and compose.yaml against a real Redis: health, admin port, HEALTHCHECK, TLS, SIGTERM
	DELEGATION_IMAGE_TEST=1 CONTAINER_ENGINE=$(CONTAINER_ENGINE) IMAGE=$(IMAGE) \
		scripts/run-pytest tests/container $(PYTEST_ARGS)

# ---------------------------------------------------------------------------------------------------
##@ Cleaning

.PHONY: clean
clean: ## Remove generated stubs, caches and build output (keeps .venv)
	rm -rf delegation build dist .mypy_cache .ruff_cache .pytest_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf

.PHONY: distclean
distclean: clean ## clean, and remove .venv and .hypothesis too
	rm -rf $(VENV) .hypothesis
