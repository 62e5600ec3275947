# The two commands a new user needs: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# Extra pip arguments for the torch install, e.g. a CPU-only index on a machine that has one.
TORCH_PIP_ARGS ?=
DATA_DIR ?= ./data
HOST ?= 127.0.0.1
PORT ?= 8081

.PHONY: install install-dev test-services serve test lint typecheck bench bench-http bench-recall bench-build bench-facts clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# CPU torch goes in first and pinned, so nothing that depends on torch pulls a CUDA build.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

serve: install
	$(BIN)/hirag-oz serve --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

# A real Redis for the test of rate limits shared by several instances; that test is skipped
# when redis-server is missing and cannot be installed (apt needs root).
test-services:
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && \
		{ apt-get install -y -q redis-server >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null 2>&1; }; }; } || \
		echo "redis-server is not installed: the shared rate-limit test will be skipped"

test: install-dev test-services
	$(BIN)/pytest -q

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: install-dev
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python bench/store_search.py

bench-http: install-dev
	$(BIN)/python bench/http_load.py --clients 1,4,8

# DATA: a folder of LoCoMo-format conversation files (JSON).
bench-build: install-dev
	$(BIN)/python bench/build_context.py

bench-facts: install-dev
	$(BIN)/python bench/facts.py

bench-recall: install-dev
	@test -n "$(DATA)" || { echo "usage: make bench-recall DATA=<folder of LoCoMo JSON files>"; exit 2; }
	$(BIN)/python bench/conversation_recall.py $(DATA)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
