# Two commands matter: `make run` and `make test`. Everything else is a helper.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

VENDOR  := controlplane/static/vendor
ASSETS  := $(VENDOR)/.stamp

.PHONY: run test lint install assets test-fast bench bench-ingest bench-compare bench-scale clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Front-end libraries come from npm at build time and are served by the app, never from a CDN.
$(ASSETS): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp node_modules/htmx.org/dist/htmx.min.js node_modules/chart.js/dist/chart.umd.min.js $(VENDOR)/
	touch $(ASSETS)

install: $(STAMP) $(ASSETS)
assets: $(ASSETS)

run: $(STAMP) $(ASSETS)
	$(BIN)/switchboard db upgrade
	$(BIN)/switchboard up

# Lint and type checks first: `make test` fails on a finding (config in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check relay controlplane workers scripts tests bench wsgi.py
	$(BIN)/mypy

test: lint $(ASSETS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) $(ASSETS)
	$(BIN)/python -m pytest -m "not e2e and not browser" $(PYTEST_ARGS)

# The benchmark harness (bench/README.md). Not part of `make test`: it measures, tests assert.
bench: $(STAMP)
	@command -v wrk >/dev/null || (echo "installing wrk" && apt-get install -y -q wrk >/dev/null)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Usage ingestion alone, on SQLite and PostgreSQL (bench/ingest.py; PostgreSQL from SWITCHBOARD_TEST_POSTGRES_URL).
bench-ingest: $(STAMP)
	$(BIN)/python -m bench.ingest $(BENCH_ARGS)

# Optional, not in CI: LiteLLM proxy measured side by side in one run (installs it in bench/.venv-litellm).
bench-compare: $(STAMP)
	@command -v wrk >/dev/null || (echo "installing wrk" && apt-get install -y -q wrk >/dev/null)
	$(BIN)/python -m bench.compare $(BENCH_ARGS)

# Many customers on PostgreSQL (bench/scale.py): writes, propagation to the relay, RSS, CPU per request.
# Needs a PostgreSQL server (SWITCHBOARD_BENCH_POSTGRES_URL, default the local one); e.g.
# make bench-scale BENCH_ARGS="--keys 1000000 --users 500000"
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info node_modules $(VENDOR)
