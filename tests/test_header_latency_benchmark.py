"""Issue 29, item 15: the header-latency benchmark measures complete headers. It plays a
camera that publishes its hardware description, so no header it times lacks CCD_MANU,
CCD_TYPE, LSST_NUM or CCD_SERN (it exits non-zero if any header is incomplete)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cscs.core.broker import find_mosquitto

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "header_latency.py"


@pytest.mark.long  # 7-17 s: the long tier keeps `make test` within 8 minutes
def test_the_benchmark_times_complete_headers_only() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCHMARK), "--exposures", "3", "--backend", "mosquitto"],
        capture_output=True, text=True, timeout=120, cwd=BENCHMARK.parents[1],
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "headers with missing keywords: 0" in run.stdout
