# Two commands matter: `make run` and `make test`. Everything else is a helper.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

VENDOR  := controlplane/static/vendor
ASSETS  := $(VENDOR)/.stamp

.PHONY: run test lint audit install assets test-fast bench bench-ingest bench-compare bench-scale bench-redis clean

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
	mkdir -p $(VENDOR)/swagger-ui
	cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css $(VENDOR)/swagger-ui/
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
	$(BIN)/bandit -c pyproject.toml -q -r relay controlplane workers scripts wsgi.py

# Installed packages against published advisories. Not part of `make test`: it needs the network.
# By default it asks PyPI's JSON API (https://pypi.org/pypi/<name>/<version>/json, whose advisories
# come from OSV); AUDIT_ARGS="-s osv" asks https://api.osv.dev instead. Our own package is skipped.
# --strict: a package the source cannot answer for fails the audit (a mirror without the JSON API
# would otherwise report "no known vulnerabilities" having checked nothing).
audit: $(STAMP)
	$(BIN)/pip-audit --strict --skip-editable --progress-spinner off $(AUDIT_ARGS)

# Tests run in TEST_WORKERS pytest-xdist workers, each a session of its own (its own Redis database,
# PostgreSQL database and temporary folders); a test module runs whole on one worker (tests/conftest.py).
# TEST_WORKERS=0 runs them in this one process.
# Three on two cores: the e2e and browser tests spend much of their time waiting on the processes
# they started (14.5 min with two workers, 12 with three, on this 2-core machine).
TEST_WORKERS ?= 3
XDIST   := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

# Tests start hundreds of Python processes (relays, gateways, CLI calls): compiled once here, each
# starts ~0.5 s sooner even where PYTHONDONTWRITEBYTECODE keeps Python from caching them itself.
BYTECODE = $(BIN)/python -m compileall -q -j 0 relay controlplane workers scripts bench tests wsgi.py

test: lint $(ASSETS)
	$(BYTECODE)
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP) $(ASSETS)
	$(BYTECODE)
	$(BIN)/python -m pytest $(XDIST) -m "not e2e and not browser" $(PYTEST_ARGS)

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

# Redis's own CPU per request (admit + settle) with a core of its own, batched and not (bench/redis_cost.py).
bench-redis: $(STAMP)
	$(BIN)/python -m bench.redis_cost $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info node_modules $(VENDOR)
