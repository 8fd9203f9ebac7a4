# The README's two commands: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test lint bench clean install install-test

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## The daemon on the example assets with a private, embedded valkey-server.
run: install
	$(BIN)/python -m assetmgr daemon --embedded --root examples/assets --schemas schemas $(ARGS)

## The whole suite (lint included), against real valkey-server processes: JOBS tests at a
## time, then the `serial` ones (machine-wide state, speed) alone.
JOBS ?= 2
test: install-test
	$(BIN)/ruff check assetmgr tests perf
	$(BIN)/ruff format --check assetmgr tests perf
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(JOBS) -m "not serial" $(ARGS) || [ $$? -eq 5 ]  # 5: none selected
	$(BIN)/python -m pytest -m serial $(ARGS) || [ $$? -eq 5 ]

lint: install-test
	$(BIN)/ruff check assetmgr tests perf
	$(BIN)/ruff format --check assetmgr tests perf
	$(BIN)/mypy

bench: install-test
	$(BIN)/pip install --quiet -e '.[perf]'
	$(BIN)/python perf/bench.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
