# Two entry points for a fresh machine with only Python 3.11+ and make:
#   make demo   - set up, then run a simulated night on an embedded broker
#   make test   - set up, then run lint, type checks and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck docs clean bench

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/cscs demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

docs: $(BIN)/.installed
	$(BIN)/cscs interface-doc --output docs/interface.md

test: lint typecheck $(BIN)/.installed
	$(BIN)/cscs interface-doc --check docs/interface.md
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/command_latency.py
	$(BIN)/python benchmarks/daq_throughput.py
	$(BIN)/python benchmarks/header_latency.py
	$(BIN)/python benchmarks/archive_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
