"""The soak on InfluxDB, its pure and bookkeeping parts (no process, no server): the
fault ``influx-restart`` planned only when the EFD is InfluxDB (a seed's default plan
unchanged), over only once the EFD writer has written what it spooled, never an
explanation of a shortfall; and ``--efd influxdb`` refused where ``influxd`` is not
installed."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cscs.camera.geometry import Camera
from cscs.efd_writer.interface import EfdWriterStatus
from sim.daq.journal import TakenImage
from sim.site.soak.faults import Injector
from sim.site.soak.night import SoakOptions, run_soak
from sim.site.soak.plan import FaultKind, plan_faults, planned_kinds
from sim.site.soak.reconcile import FaultWindow, SensorFile, reconcile
from sim.site.soak.record import NightRecord

NIGHT = {Camera.LATISS: 30, Camera.COMCAM: 10}


def test_the_default_plan_of_a_seed_is_what_it_was_before_influxdb() -> None:
    # seed 3 of CI's night, as plan_faults drew it before influx-restart existed
    before = [
        ("kill-archiver", 1, 3), ("kill-efd", 1, 6), ("kill-gateway", 1, 9),
        ("broker-restart", 1, 12), ("ocs-link-cut", 1, 15), ("disk-full", 1, 18),
        ("daq-corrupt", 1, 21), ("kill-header-service", 1, 24), ("daq-drop", 1, 27),
        ("broker-restart", 2, 3), ("header-never", 2, 6), ("kill-ocs-batch", 2, 9),
    ]  # fmt: skip
    plan = plan_faults(3, NIGHT, spacing=4)
    assert [(f.kind.value, f.camera.value, f.image) for f in plan.faults] == before


def test_influx_restart_is_planned_only_when_the_efd_is_influxdb() -> None:
    assert FaultKind.INFLUX_RESTART not in planned_kinds()
    assert set(planned_kinds(influx=True)) == set(FaultKind)
    for seed in range(50):
        assert FaultKind.INFLUX_RESTART not in plan_faults(seed, NIGHT, spacing=4).kinds()
    long_night = {Camera.LATISS: 500, Camera.COMCAM: 100}
    plan = plan_faults(1, long_night, spacing=10, influx=True)
    assert plan.kinds() == set(FaultKind)  # every kind, InfluxDB's restart included
    assert plan == plan_faults(1, long_night, spacing=10, influx=True)


def _status(store_up: bool, spool_bytes: int) -> EfdWriterStatus:
    return EfdWriterStatus(received=10, written=10, spooled=3, spoolBytes=spool_bytes,
                           refused=0, storeUrl="influxdb://127.0.0.1:1/efd",
                           storeUp=store_up, lastError="")  # fmt: skip


def test_the_writer_has_drained_only_when_it_says_so_after_the_restart() -> None:
    record = NightRecord("lsst")
    assert not record.efd_drained_since(0.0)  # nothing heard
    record.efd_status, record.efd_status_at = _status(True, 0), 10.0
    assert record.efd_drained_since(9.0)
    assert not record.efd_drained_since(10.0)  # said before the restart: stale
    record.efd_status = _status(True, 4096)
    assert not record.efd_drained_since(9.0)  # still spooled
    record.efd_status = _status(False, 0)
    assert not record.efd_drained_since(9.0)  # the store is down


class _FakeInflux:
    """Records stop and start (called in threads, as the soak does), and wakes the test
    when started."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.calls: list[str] = []
        self.started = asyncio.Event()
        self._loop = loop
        self._lock = threading.Lock()

    def stop(self) -> None:
        with self._lock:
            self.calls.append("stop")

    def start(self) -> None:
        with self._lock:
            self.calls.append("start")
        self._loop.call_soon_threadsafe(self.started.set)


async def test_an_influx_restart_is_over_once_the_writer_says_its_spool_is_written(
    tmp_path: Path,
) -> None:
    influx = _FakeInflux(asyncio.get_running_loop())
    record = NightRecord("lsst")
    site: Any = SimpleNamespace(influx=influx, archive=tmp_path)
    injector = Injector(site, bus=None, record=record, min_free_bytes=0)  # type: ignore[arg-type]
    restart = asyncio.create_task(injector.restart_influx(0.0))
    await influx.started.wait()
    assert influx.calls == ["stop", "start"]

    async def say(status: EfdWriterStatus) -> None:
        record.efd_status, record.efd_status_at = status, time.monotonic()
        async with record.changed:
            record.changed.notify_all()

    # The writer says what it says every status interval: down, then up with its spool
    # still to write: the fault is not over (a negative: given half a second to end).
    for status in (_status(False, 4096), _status(True, 4096)):
        await say(status)
    await asyncio.wait([restart], timeout=0.5)
    assert not restart.done()
    while not restart.done():  # then written (said again until heard after the restart)
        await say(_status(True, 0))
        await asyncio.wait([restart], timeout=0.05)
    ok, note = restart.result()
    assert ok, note
    assert record.efd_status is not None
    assert record.efd_status.spoolBytes == 0
    assert "spool empty: True" in note


async def test_an_influx_restart_without_influxdb_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    site: Any = SimpleNamespace(influx=None, archive=tmp_path)
    injector = Injector(site, bus=None, record=NightRecord("lsst"), min_free_bytes=0)  # type: ignore[arg-type]
    ok, note = await injector.restart_influx(0.0)
    assert not ok
    assert "no InfluxDB" in note


def test_an_influx_restart_explains_no_missing_header() -> None:
    image = TakenImage("AT_O_20261121_000001", "BIAS", ("R00_S00",), (), 1000.0)
    catalog = {(image.imageName, "R00_S00"): SensorFile("/a/f.fits", "c0ffee", False, "AIRTEMP")}
    window = FaultWindow(FaultKind.INFLUX_RESTART, "InfluxDB", 1, 990.0, 1010.0)
    result = reconcile(1, {"LATISS": [image]}, catalog, {k: "c0ffee" for k in catalog}, {},
                       [], {}, [], [window])  # fmt: skip
    assert not result.ok
    assert "no fault that destroyed it" in result.unexplained[0]


async def test_efd_influxdb_is_refused_where_influxd_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no influxd to be found
    state = tmp_path / "state"
    out = io.StringIO()
    options = SoakOptions(state_dir=state, latiss=6, comcam=2, efd="influxdb")
    assert await run_soak(options, out) == 2
    assert "--efd influxdb needs influxd, which is not installed" in out.getvalue()
    assert not state.exists()  # refused before anything was made or started
