# Two commands on a fresh machine: `make serve` and `make test`.
# Everything is installed into .venv (and tests/js/node_modules) from this repo's files.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONSOLE_STATIC := src/chatmdb/gateway/console_static
CONSOLE_CLIENT := $(CONSOLE_STATIC)/socket.io.min.js

.PHONY: setup browser serve test lint typecheck unit bench bench-quick clean mutate

setup: $(STAMP) tests/js/node_modules/.installed browser $(CONSOLE_CLIENT)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The console's Socket.IO client is the official browser build, from the npm package that
# web/package-lock.json pins, copied into the Python package (not committed) so a wheel carries it.
$(CONSOLE_CLIENT): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	cp web/node_modules/socket.io-client/dist/socket.io.min.js.map $(CONSOLE_STATIC)/
	cp web/node_modules/socket.io-client/dist/socket.io.min.js $@

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser tests drive Debian's Chromium (browser downloads from elsewhere are not used).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  elif command -v sudo >/dev/null; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "the browser tests need Chromium at $(CHROMIUM): apt-get install chromium (as root)" >&2; exit 1; \
	  fi; \
	fi

serve: $(STAMP) $(CONSOLE_CLIENT)
	$(VENV)/bin/chatmdb serve

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest

test: setup lint unit

# Mutation testing (not part of `make test`; scope and tests in pyproject's [tool.mutmut]).
# The tests' subprocesses import the mutated copy too (PYTHONPATH), and inherit the mutant to run.
# Survivors and their reasons: docs/mutation.md. `$(VENV)/bin/mutmut show NAME` prints one's diff.
mutate: $(STAMP)
	PYTHONPATH=$(CURDIR)/mutants/src nice -n 15 $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

bench: $(STAMP)
	$(VENV)/bin/chatmdb bench

bench-quick: $(STAMP)
	$(VENV)/bin/chatmdb bench --quick

clean:
	rm -rf $(VENV) tests/js/node_modules web/node_modules $(CONSOLE_CLIENT) $(CONSOLE_CLIENT).map .mypy_cache .ruff_cache .pytest_cache
