# Two entry points for a fresh machine with only Python 3.11+ and make:
#   make demo   - set up, then run a simulated night on an embedded broker
#   make test   - set up, then lint, type-check and run the offline and system tiers
# and: make test-long (whole nights and the soak; .ci/run runs it after make test),
# make test-fast (the offline tier: nothing started, under a minute, while working).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Exact versions with hashes, one resolution for Python 3.11-3.13 (ADR 0026): what
# `make` installs, so a new release of a dependency never changes a fresh install.
LOCK := requirements/lock.txt
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --extra dev \
	--custom-compile-command "make lock"

.PHONY: demo test test-fast test-long lint typecheck docs clean bench screenshot lock check-ranges

# Locked versions only (--no-deps: the lock is the whole environment; --require-hashes:
# each file is the one locked), the project itself without build isolation so that its
# build backend is the locked setuptools too (it compiles cscs/camera/_fitsdata.c in place,
# ADR 0035), then pip's own check that the locked
# versions satisfy every range pyproject.toml declares.
$(BIN)/.installed: pyproject.toml $(LOCK) cscs/camera/_fitsdata.c
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + "); set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $@

# Re-resolve pyproject.toml's ranges to the newest versions they admit; review the diff.
lock: $(BIN)/.installed
	$(BIN)/uv pip compile pyproject.toml requirements/build.in $(LOCK_FLAGS) --upgrade -o $(LOCK)

# The ranges still resolve today, for people who install the package into their own
# environment (a resolution only: nothing is installed, the lock is left as it is).
check-ranges: $(BIN)/.installed
	$(BIN)/uv pip compile pyproject.toml requirements/build.in $(LOCK_FLAGS) --no-header \
		--quiet -o $(VENV)/ranges-today.txt
	@echo "pyproject.toml's ranges resolve today ($(VENV)/ranges-today.txt)"

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

# The offline tier: CSC logic on the in-memory bus, pure code, files, the DAQ over
# ZeroMQ in threads. Nothing is started: tests/conftest.py fails a test that tries
# (docs/testing.md). Four workers on two cores: a third of the tier's time is waiting
# on simulated clocks (exposures, telemetry rates), which another worker fills.
OFFLINE := -m "not broker and not long" -n 4
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest $(OFFLINE)

# The offline tier, then the system tier: CSCs on real brokers (amqtt, Mosquitto), as
# processes, on Dask clusters, one at a time. At most 8 minutes on two cores.
test: lint typecheck $(BIN)/.installed
	$(BIN)/cscs interface-doc --check docs/interface.md
	$(BIN)/python -m pytest $(OFFLINE) --durations=5
	$(BIN)/python -m pytest -m "broker and not long" --durations=15

# The long tier: whole simulated nights, the short soak, and the fault tests that wait
# out real time (a 30 s outage, a 30 s header timeout).
test-long: $(BIN)/.installed
	$(BIN)/python -m pytest -m long --durations=10

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/command_latency.py
	$(BIN)/python benchmarks/daq_throughput.py
	$(BIN)/python benchmarks/header_latency.py
	$(BIN)/python benchmarks/archive_throughput.py
	$(BIN)/python -m benchmarks.archive_scaling
	$(BIN)/python -m benchmarks.efd_throughput
	$(BIN)/python -m benchmarks.archive_cost
	$(BIN)/python -m benchmarks.fitsdata_kernel
	$(BIN)/python benchmarks/qc_throughput.py
	$(BIN)/python benchmarks/gateway_throughput.py
	$(BIN)/python benchmarks/dashboard_latency.py
	$(BIN)/python -m benchmarks.dashboard_under_attack

# The dashboard during the demo night, as dashboard.png (needs Debian's chromium).
screenshot: $(BIN)/.installed
	$(BIN)/python tools/screenshot.py dashboard.png

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache build
	find cscs -name '*.so' -delete
