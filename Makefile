# skyfleet — the two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Start the whole fleet (embedded PostgreSQL unless DATABASE_URL is set).
run: install
	$(VENV)/bin/skyfleet run

## Run the test suite against a real PostgreSQL (embedded, or TEST_DATABASE_URL).
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

## Benchmarks (not part of `make test`); prints figures.
bench: install
	$(PY) -m bench $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check api worker manager jobtypes tests bench
	$(VENV)/bin/mypy api worker manager jobtypes bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
