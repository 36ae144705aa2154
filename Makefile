# Two commands on a fresh machine: `make serve` and `make test`.
# Everything is installed into .venv (and tests/js/node_modules) from this repo's files.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup serve test lint typecheck unit bench bench-quick clean

setup: $(STAMP) tests/js/node_modules/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

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
