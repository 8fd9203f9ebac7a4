# The README's two commands: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test lint fuzz bench clean install install-test

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
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n $(JOBS) -m "not serial" $(ARGS) || [ $$? -eq 5 ]  # 5: none selected
	$(BIN)/python -m pytest -m serial $(ARGS) || [ $$? -eq 5 ]

lint: install-test
	$(BIN)/ruff check assetmgr tests perf
	$(BIN)/ruff format --check assetmgr tests perf
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

## Long fuzzing: the property tests with many more examples (HYPOTHESIS_PROFILE=fuzz), then
## atheris (libFuzzer) on worker.evaluate for FUZZ_SECONDS. Crashes land in .fuzz/.
FUZZ_SECONDS ?= 300
fuzz: install-test
	HYPOTHESIS_PROFILE=fuzz FUZZ_LARGE=1 $(BIN)/python -m pytest -p no:cacheprovider \
		--timeout=7200 tests/test_fuzz_worker.py tests/test_fuzz_loading.py $(ARGS)
	$(BIN)/pip install --quiet -e '.[fuzz]'
	mkdir -p .fuzz/corpus
	cp -n examples/assets/*/*.json .fuzz/corpus/ 2>/dev/null || true
	cd .fuzz && ../$(BIN)/python ../tests/atheris_evaluate.py -max_total_time=$(FUZZ_SECONDS) corpus

bench: install-test
	$(BIN)/pip install --quiet -e '.[perf]'
	$(BIN)/python perf/bench.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .fuzz
