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
# Extra arguments of bench/report.py for `make bench`, e.g. --quick.
BENCH_ARGS ?=

.PHONY: install install-dev ocr-engine test-services bench-ocr serve test lint typecheck bench bench-store bench-http bench-recall bench-build bench-facts bench-sessions bench-data bench-tenancy clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# CPU torch goes in first and pinned, so nothing that depends on torch pulls a CUDA build.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	touch $@

# The client distribution (client/) is installed from this checkout with the server that
# depends on it.
$(VENV)/.installed: pyproject.toml client/pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e ./client -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml client/pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e ./client -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

serve: install ocr-engine
	$(BIN)/hirag-oz serve --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

# Debian packages installed with apt when run as root and missing: $(1) a command to look for,
# $(2) the packages, $(3) what to say when they cannot be installed.
define apt_install
	@command -v $(1) >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q $(2) >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(2) >/dev/null 2>&1; }; }; } || \
		echo "$(3)"
endef

# Tesseract, the default OCR engine for scanned pages and images.
ocr-engine:
	$(call apt_install,tesseract,tesseract-ocr tesseract-ocr-eng,tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-eng): scanned pages need it or pip install 'hirag-oz[rapidocr]')

# A real Redis for the test of rate limits shared by several instances; that test is skipped
# when redis-server is missing and cannot be installed.
test-services: ocr-engine
	$(call apt_install,redis-server,redis-server,redis-server is not installed: the shared rate-limit test will be skipped)

test: install-dev test-services
	$(BIN)/pytest -q

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: install-dev
	$(BIN)/mypy

# The performance report (bench/report.py): every benchmark side by side, about 13 minutes;
# BENCH_ARGS=--quick for a 3-5 minute run.
bench: install-dev
	$(BIN)/python bench/report.py $(BENCH_ARGS)

bench-store: install-dev
	$(BIN)/python bench/store_search.py

bench-http: install-dev
	$(BIN)/python bench/http_load.py --clients 1,4,8

# DATA: a folder of LoCoMo-format conversation files (JSON).
bench-build: install-dev
	$(BIN)/python bench/build_context.py

bench-facts: install-dev
	$(BIN)/python bench/facts.py

bench-data: install-dev
	$(BIN)/python bench/archive.py

bench-tenancy: install-dev
	$(BIN)/python bench/tenancy.py

bench-ocr: install-dev ocr-engine
	$(BIN)/python bench/ocr_fidelity.py

# The development conversations replayed through sessions (DATA: a folder of LoCoMo JSON
# files; default the shared development set beside the checkout).
bench-sessions: install-dev
	$(BIN)/python bench/session_replay.py $(or $(DATA),../shared/data/locomo-dev)

bench-recall: install-dev
	@test -n "$(DATA)" || { echo "usage: make bench-recall DATA=<folder of LoCoMo JSON files>"; exit 2; }
	$(BIN)/python bench/conversation_recall.py $(DATA)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
