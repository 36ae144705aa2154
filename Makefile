# Two commands on a fresh machine: `make serve` and `make test`.
# Everything is installed into .venv (and tests/js/node_modules) from this repo's files.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser serve test lint typecheck unit bench bench-quick clean

setup: $(STAMP) tests/js/node_modules/.installed browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

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

serve: $(STAMP)
	$(VENV)/bin/chatmdb serve

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest

test: setup lint unit

bench: $(STAMP)
	$(VENV)/bin/chatmdb bench

bench-quick: $(STAMP)
	$(VENV)/bin/chatmdb bench --quick

clean:
	rm -rf $(VENV) tests/js/node_modules .mypy_cache .ruff_cache .pytest_cache
