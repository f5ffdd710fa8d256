# skyfleet — the two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INFRA_STAMP := $(VENV)/.installed-infra

.PHONY: install run test bench chaos lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The AWS CDK (and cfn-lint) only for the infra tests: `make run` stays lean.
$(INFRA_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,infra]'
	touch $(INFRA_STAMP)

install: $(STAMP)

## Start the whole fleet (embedded PostgreSQL unless DATABASE_URL is set).
run: install
	$(VENV)/bin/skyfleet run

## Run the test suite against a real PostgreSQL (embedded, or TEST_DATABASE_URL).
test: $(INFRA_STAMP)
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
	$(VENV)/bin/ruff check api worker manager jobtypes storage infra tests bench
	$(VENV)/bin/mypy api worker manager jobtypes storage infra bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
