# Two entry points for a fresh machine with only Python 3.11+ and make:
#   make demo   - set up, then run a simulated night on an embedded broker
#   make test   - set up, then lint, type-check and run every test (both tiers)
# and, while working: make test-fast (the offline tier: no broker, under a minute).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint typecheck docs clean bench screenshot

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/cscs demo

# ruff, the formatting, and the layers (import contracts in pyproject.toml)
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(BIN)/.installed
	$(BIN)/mypy

docs: $(BIN)/.installed
	$(BIN)/cscs interface-doc --output docs/interface.md

# The offline tier: CSC logic on the in-memory bus, pure code, files, the DAQ over ZeroMQ.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not broker"

# Both tiers: the offline one, then CSCs on real brokers (amqtt, Mosquitto) and as processes.
test: lint typecheck $(BIN)/.installed
	$(BIN)/cscs interface-doc --check docs/interface.md
	$(BIN)/python -m pytest --durations=15

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/command_latency.py
	$(BIN)/python benchmarks/daq_throughput.py
	$(BIN)/python benchmarks/header_latency.py
	$(BIN)/python benchmarks/archive_throughput.py
	$(BIN)/python -m benchmarks.archive_scaling
	$(BIN)/python benchmarks/qc_throughput.py
	$(BIN)/python benchmarks/gateway_throughput.py
	$(BIN)/python benchmarks/dashboard_latency.py

# The dashboard during the demo night, as dashboard.png (needs Debian's chromium).
screenshot: $(BIN)/.installed
	$(BIN)/python tools/screenshot.py dashboard.png

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
