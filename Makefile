SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
PROTO_FILES = $(shell find protos -name '*.proto' | sort)
# Hand-written code; gen/ holds generated stubs and is never linted.
CODE := gateway_common gateway_cli services edge suite bench tests

.PHONY: help up down test test-deps proto lint check bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# buf is pinned exactly in package.json and pins its platform binary exactly itself. No lock
# file: npm 11 writes one without the other platforms' optional packages, then `npm ci` rejects it.
$(BUF): package.json
	npm install --no-audit --no-fund --no-package-lock --loglevel=error
	@touch $@

up: $(STAMP) ## Create the venv, install, and run the whole suite on embedded defaults (Ctrl-C stops)
	$(PY) -m suite up

down: ## Stop a suite started by `make up`
	@$(PY) -m suite down

test-deps: $(STAMP) $(BUF) ## Install what the tests need (redis-server, postgresql, chromium from Debian when missing)
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { \
	  echo "installing chromium and chromium-driver from Debian's packages (the admin UI's browser test)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

proto: $(STAMP) ## Regenerate the Python stubs and type stubs from protos/
	rm -rf gen/gateway
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos -I third_party/googleapis \
	  --python_out=gen --grpc_python_out=gen --mypy_out=gen --mypy_grpc_out=gen $(PROTO_FILES) >/dev/null

lint: $(STAMP) $(BUF) ## buf lint, ruff, mypy
	$(BUF) lint
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)
	$(VENV)/bin/mypy gateway_common gateway_cli services edge suite bench

check: lint ## Lint, and fail when the committed stubs differ from what `make proto` writes
	$(PY) -m pytest -q tests/test_contracts.py

test: test-deps lint ## Install what is needed and run every test
	$(PY) -m pytest -q -p no:cacheprovider

# e.g. make bench BENCH_ARGS="--cpu 0 --json before.json"; python -m bench --help lists every option.
BENCH_ARGS ?=
bench: $(STAMP) ## Measure what the gateway adds and costs against a direct call (BENCH_ARGS passed through)
	$(PY) -m bench $(BENCH_ARGS)

clean: ## Remove the venv, node_modules and local data
	rm -rf $(VENV) node_modules .gateway .bench
