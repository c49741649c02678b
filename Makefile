# make test  - install what the tests need, then run every test (the tests start the emulators)
# make test-fast - every test that needs none of the emulators, Chromium and the gcloud SDK, fewer Hypothesis examples (see README "Tests")
# make run   - start the whole system locally (see README)
# make bench - measure performance and cost (see docs/benchmarks.md)
# make scale - cost and limits at 10k/100k/1M users, on paper (docs/scale.md)
# make lint  - ruff and mypy
# make web   - build the browser package and the client.js the stream service serves

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
WEB := clients/web
# npm ci writes this; newer than the lockfile means node_modules matches it.
WEB_STAMP := $(WEB)/node_modules/.package-lock.json

.PHONY: install web-deps web test test-fast lint run bench bench-quick scale clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)
	@bash devtools/system-packages.sh
	@$(MAKE) --no-print-directory web-deps

# The browser package's toolchain (TypeScript, esbuild, React), exactly as locked.
web-deps:
	@if [ ! -f $(WEB_STAMP) ] || [ $(WEB)/package-lock.json -nt $(WEB_STAMP) ]; then \
	  cd $(WEB) && npm ci --no-audit --no-fund; fi

# Rebuild the package and functions/stream/web/client.js (commit the latter; a test compares them).
web: web-deps
	cd $(WEB) && npm run build

# Python's default, bytecode caches (__pycache__/, ignored by git), even where the environment turns them
# off: else every run, and every server a test starts, compiles the repository's modules again.
TEST_ENV := PYTHONDONTWRITEBYTECODE=

test: install
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# A tenth of each property test's examples (tests/support/fuzzing.py); make test runs them all.
# Two pytest workers (pytest-xdist), each taking the next test when idle: the tests of the fast selection
# start their own servers and wait on timeouts, leaving a core idle when run one at a time.
# PYTEST_ARGS="-n 0" runs them in this process (for --pdb, or to time one test alone).
FAST_WORKERS ?= 2

test-fast: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -m "not emulator and not browser and not gcloud" --hypothesis-profile=quick \
	  -n $(FAST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check shared devtools functions tests bench ops
	$(PY) -m mypy

run: $(STAMP)
	$(PY) -m devtools.run

bench: install
	$(PY) -m bench.run $(BENCH_ARGS)
	$(PY) -m bench.scale --no-write >bench/scale.md

bench-quick: install
	$(PY) -m bench.run --quick $(BENCH_ARGS)

scale: $(STAMP)
	$(PY) -m bench.scale

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts build $(WEB)/node_modules $(WEB)/dist
