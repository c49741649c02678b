# make test  - install what the tests need, then run every test (the tests start the emulators)
# make test-fast - every test that needs neither the emulators nor Chromium (see README "Tests")
# make run   - start the whole system locally (see README)
# make bench - measure performance and cost (see docs/benchmarks.md)
# make lint  - ruff and mypy

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test test-fast lint run bench bench-quick clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)
	@bash devtools/system-packages.sh

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not emulator and not browser" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check shared devtools functions tests bench ops
	$(PY) -m mypy

run: $(STAMP)
	$(PY) -m devtools.run

bench: install
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: install
	$(PY) -m bench.run --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts build
