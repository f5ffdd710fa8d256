# skyfleet — the two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INFRA_STAMP := $(VENV)/.installed-infra

.PHONY: install run test bench chaos lint clean

$(STAMP): setup.cfg pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./client
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The AWS CDK (and cfn-lint) only for the infra tests: `make run` stays lean.
$(INFRA_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,infra]'
	touch $(INFRA_STAMP)

# The web console's front-end packages, from npm with the lock file, served by the API itself.
CONSOLE_VENDOR := api/console/static/vendor
CONSOLE_ASSETS := $(CONSOLE_VENDOR)/.installed
$(CONSOLE_ASSETS): console/package.json console/package-lock.json
	npm ci --prefix console --no-audit --no-fund --loglevel=error
	mkdir -p $(CONSOLE_VENDOR)
	cp console/node_modules/htmx.org/dist/htmx.min.js $(CONSOLE_VENDOR)/htmx.min.js
	cp console/node_modules/uplot/dist/uPlot.iife.min.js console/node_modules/uplot/dist/uPlot.min.css $(CONSOLE_VENDOR)/
	cp console/node_modules/htmx-ext-sse/dist/sse.min.js $(CONSOLE_VENDOR)/htmx-sse.min.js
	touch $@

# Debian's Chromium drives the console's browser tests (Playwright cannot download browsers here).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	else echo "the console's browser tests need Chromium at $(CHROMIUM): run 'apt-get install chromium' as root (or set CHROMIUM=)"; exit 1; fi

install: $(STAMP) $(CONSOLE_ASSETS)

## Start the whole fleet (embedded PostgreSQL unless DATABASE_URL is set).
run: install
	$(VENV)/bin/skyfleet run

## Run the test suite against a real PostgreSQL (embedded, or TEST_DATABASE_URL).
test: $(INFRA_STAMP) $(CONSOLE_ASSETS) $(CHROMIUM)
	$(PY) -m pytest $(PYTEST_ARGS)

## Benchmarks (not part of `make test`); prints figures. The peers it compares with (pgqueuer)
## come from the bench extra, installed here only.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench $(BENCH_ARGS)

## Fault injection at full size (10,000 jobs; workers, the API and PostgreSQL killed); prints figures.
chaos: install
	$(PY) -m bench.chaos $(CHAOS_ARGS)

lint: install
	$(VENV)/bin/ruff check api worker manager jobtypes storage settings infra tests bench client
	$(VENV)/bin/mypy api worker manager jobtypes storage settings infra bench client/skyfleet_client

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info console/node_modules $(CONSOLE_VENDOR)
