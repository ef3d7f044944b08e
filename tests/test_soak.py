"""The short soak night, as CI runs it: ``cscs soak`` (every CSC its own process on
Mosquitto) with 30 LATISS and 10 ComCam images and every kind of fault at least once;
it must end with nothing lost or duplicated, every file verified, and every shortfall
(a header, a QC measurement) explained by a fault injected near it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cscs.core.broker import find_mosquitto
from sim.site.soak.plan import planned_kinds

pytestmark = [
    pytest.mark.broker,
    pytest.mark.long,  # about 2.5 minutes: the long tier
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
    pytest.mark.timeout(1200),
]


def test_a_short_night_with_every_fault_loses_nothing(tmp_path: Path) -> None:
    account = tmp_path / "soak.json"
    command = [sys.executable, "-m", "cscs", "soak", "--latiss", "30", "--comcam", "10",
               "--spacing", "4", "--headroom-gb", "12", "--seed", "3",
               "--state-dir", str(tmp_path / "state"), "--json", str(account)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=1100,
                         env={**os.environ, "CSCS_STATE_DIR": str(tmp_path)})  # fmt: skip
    said = run.stdout[-6000:] + run.stderr[-3000:]
    assert run.returncode == 0, said
    night = json.loads(account.read_text())
    assert (night["taken"], night["lost"], night["duplicated"]) == (40, 0, 0), said
    assert night["archived"] == night["verified"] == 40, said
    assert night["unexplained"] == [], said
    assert night["problems"] == [], said
    assert {f["kind"] for f in night["faults"]} == {k.value for k in planned_kinds()}, said
    assert 0 < night["qcForwarded"] <= night["qcMeasured"] <= night["qcExpected"], said
    assert all(alarm["cleared"] for alarm in night["alarms"]), said
    assert "archive disk" in {f["target"] for f in night["faults"]}
    assert any("6002" in str(f.get("report")) for f in night["faultStates"]), said
