"""The archiver on Dask (issue 19), over Mosquitto: each (image, sensor) a task on a
worker process that reads the DAQ and writes the file itself.

* the files are the files the local path makes (bytes compared);
* a worker SIGKILLed while its task waits for the DAQ costs a retry, not a file;
* the scheduler lost: errorCode 6004, then recovery or FAULT as configured, and
  catch-up finishes the image taken meanwhile.

The first runs on ``dask-local`` (the cluster the CSC starts and owns); the others on
one site's cluster, started once for the module (:func:`cluster`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from astropy.io import fits

from cscs.archiver.executor import DaskArchiving
from cscs.archiver.interface import ERROR_EXECUTOR_LOST
from cscs.core.broker import EmbeddedBroker, free_port
from cscs.core.remote import EventStream
from cscs.core.states import State
from sim.testkit import observatory
from tests.test_archiver import BIAS, OBJECT, archived, no_partial_files, outcomes, verify_all

pytestmark = pytest.mark.broker

DASK_LOCAL = {"executor": "dask-local", "dask_workers": 2, "dask_threads_per_worker": 1}
#: Three of ComCam's nine sensors: an image of several detectors, each file with its own
#: part of the header, without nine CCDs' pixels to make.
SOME_COMCAM = {"sensors": ["R22_S10", "R22_S11", "R22_S12"]}


def _primary_cards_but_creation(path: Path) -> list[tuple[str, Any]]:
    """The primary header's cards, but for the two that say when the file was written
    and the checksum that covers them."""
    with fits.open(path) as hdus:
        return [(k, v) for k, v in hdus[0].header.items() if k not in ("DATE", "MJD", "CHECKSUM")]


def _after_primary(path: Path) -> bytes:
    """The file's bytes after the primary HDU: every segment with its header."""
    with fits.open(path) as hdus:
        offset = hdus[1].fileinfo()["hdrLoc"]
    return path.read_bytes()[offset:]


def assert_same_files(ours: Path, theirs: Path) -> None:
    assert _primary_cards_but_creation(ours) == _primary_cards_but_creation(theirs)
    assert _after_primary(ours) == _after_primary(theirs)


async def _reconfigure(obs: Any, name: str, settings: dict[str, Any]) -> None:
    """Start the archiver again with the `test` override changed by ``settings``."""
    test = yaml.safe_load((obs.config_dir / "Archiver" / "test.yaml").read_text())
    (obs.config_dir / "Archiver" / f"{name}.yaml").write_text(yaml.safe_dump(test | settings))
    for command in ("disable", "standby"):
        await obs.archiver.remote.command(command)
    await obs.archiver.remote.command("start", {"configurationOverride": name}, timeout=60)
    await obs.archiver.remote.command("enable")


@pytest.mark.long  # 7-17 s: the long tier keeps `make test` within 8 minutes
async def test_dask_writes_the_files_the_local_path_writes(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """Images of several detectors (ComCam's: not the default camera, one header part per
    detector) archived by two worker processes verify as the local path's do, and are
    byte for byte the files the local path makes of the same pixels and header (but
    for the file's own creation time, DATE and MJD, and the primary CHECKSUM over them)."""
    async with (
        observatory(mosquitto, f"d{index}", tmp_path, index=2, camera=SOME_COMCAM,
                    archiver=DASK_LOCAL | {"sensors_in_flight": 8}) as obs,
        obs.archiver.remote.stream() as events,
    ):  # fmt: skip
        dask = obs.archiver.csc.pipeline.dask  # type: ignore[attr-defined]
        assert isinstance(dask, DaskArchiving)
        assert await dask.workers() == 2
        await obs.camera.remote.command("takeImages", {"numImages": 2, **OBJECT}, timeout=60)
        count = 2 * len(SOME_COMCAM["sensors"])
        files = await archived(events, count)
        verify_all(obs, files, count)
        assert all(f["headerComplete"] for f in files)
        local_root = tmp_path / "local-archive"
        # Enabled again with an empty archive, its catch-up writes every image once more.
        await _reconfigure(obs, "local", {"executor": "local", "archive_root": str(local_root)})
        assert obs.archiver.csc.pipeline.dask is None  # type: ignore[attr-defined]
        again = await archived(events, count, timeout=120)
        assert {e["url"] for e in again} == {
            e["url"].replace(obs.archive.as_uri(), local_root.as_uri()) for e in files
        }
    for event in files:
        ours = Path(event["url"].removeprefix("file://"))
        theirs = local_root / ours.relative_to(obs.archive)
        assert_same_files(ours, theirs)
    assert no_partial_files(obs.archive)


@contextlib.asynccontextmanager
async def dask_cluster(tmp_path: Path, port: int) -> AsyncIterator[DaskProcesses]:
    processes = DaskProcesses(tmp_path, port)
    try:
        await processes.start_scheduler()
        await processes.start_workers(2)
        yield processes
    finally:
        processes.stop_all()


class DaskProcesses:
    """A Dask scheduler and workers as a site runs them: separate processes, started
    with Dask's own command line."""

    def __init__(self, tmp_path: Path, port: int) -> None:
        self.address = f"tcp://127.0.0.1:{port}"
        self.port = port
        self.logs = tmp_path
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL)  # fmt: skip

    async def start_scheduler(self) -> None:
        self.scheduler = self._start(
            "scheduler", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
            "--port", str(self.port), "--dashboard-address", ":0",
        )  # fmt: skip
        await self.wait_for_workers(0)

    async def start_workers(self, count: int) -> None:
        for n in range(count):
            self.workers.append(self._start(
                f"worker{n}", "distributed.cli.dask_worker", self.address, "--nthreads", "1",
                "--nworkers", "1", "--host", "127.0.0.1", "--dashboard-address", ":0",
            ))  # fmt: skip
        await self.wait_for_workers(count)

    async def up(self, workers: int = 2) -> None:
        """Until the scheduler runs (started again if a failed test left it stopped)
        and has ``workers`` (a killed one is back once its nanny has restarted it)."""
        if self.scheduler is None:
            await self.start_scheduler()
            await self.start_workers(workers)
        await self.wait_for_workers(workers)

    async def wait_for_workers(self, count: int, timeout: float = 60.0) -> None:
        """Until the scheduler answers and has ``count`` workers."""
        from distributed import Client

        async with asyncio.timeout(timeout):
            async with Client(self.address, asynchronous=True, timeout=timeout) as client:
                if count:
                    await client.wait_for_workers(count)

    def stop_scheduler(self) -> None:
        if self.scheduler is not None:
            self.scheduler.kill()
            self.scheduler.wait(30)
            self.scheduler = None

    def stop_all(self) -> None:
        self.stop_scheduler()
        for worker in self.workers:
            worker.kill()
            worker.wait(30)
        self.workers.clear()


@pytest_asyncio.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DaskProcesses]:
    """The module's Dask cluster, as a site runs one: a scheduler and two workers, each a
    process of its own. A test may kill any of them, and leaves the cluster as it found
    it (a killed worker its nanny restarts; a stopped scheduler the test starts again,
    with two new workers); each begins with :meth:`DaskProcesses.up`."""
    async with dask_cluster(tmp_path_factory.mktemp("dask"), free_port()) as processes:
        yield processes


def _kill_worker_waiting_on_the_daq(dask: DaskArchiving) -> Any:
    """SIGKILL the worker process whose task is the one still running; its pid."""

    async def kill() -> int:
        processing: dict[str, Any] = await dask.engine.client.processing()
        busy = [worker for worker, keys in processing.items() if keys]
        assert len(busy) == 1, processing
        pids: dict[str, int] = await dask.engine.client.run(os.getpid, workers=busy)
        pid = pids[busy[0]]
        os.kill(pid, signal.SIGKILL)
        return pid

    return kill()


async def test_a_worker_killed_mid_task_costs_a_retry_not_a_file(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path, cluster: DaskProcesses
) -> None:
    """Three sensors on 2 workers of one thread; the DAQ stalls one read (the `drop`
    fault) for long enough that, when the 2 others are archived, its worker is the only
    one busy: that worker is SIGKILLed. The scheduler runs the task again on the other
    worker; every sensor ends archived once, verified, with no imageRetrievalFailed and
    no partial file left."""
    await cluster.up()
    settings = {"executor": cluster.address, "stall_timeout": 30.0, "read_attempts": 2,
                "sensors_in_flight": 3}  # fmt: skip
    async with (
        observatory(mosquitto, f"k{index}", tmp_path, index=2, camera=SOME_COMCAM,
                    archiver=settings) as obs,
        obs.archiver.remote.stream() as events,
    ):  # fmt: skip
        dask = obs.archiver.csc.pipeline.dask  # type: ignore[attr-defined]
        await obs.camera.remote.command("injectFault", {"kind": "drop", "count": 1})
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        files = await archived(events, 2)
        killed = await _kill_worker_waiting_on_the_daq(dask)
        last, failed = await outcomes(events, archived=1, failed=0, timeout=60)
        files += last
        assert failed == []
        assert killed not in (await dask.engine.client.run(os.getpid)).values()
    assert len({(f["imageName"], f["sensor"]) for f in files}) == 3
    verify_all(obs, files, 3)
    assert no_partial_files(obs.archive)


async def _error_code(events: EventStream, code: int, timeout: float = 60) -> str:
    event = await events.wait_for(
        lambda r: r.name == "errorCode" and r.data.get("errorCode") == code, timeout
    )
    return str(event.data["errorReport"])


@pytest.mark.long  # 7-17 s: the long tier keeps `make test` within 8 minutes
@pytest.mark.parametrize("outcome", ["recovers", "faults"])
async def test_the_scheduler_lost_then_back(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path, outcome: str, cluster: DaskProcesses
) -> None:
    """A site's scheduler (its own process, two worker processes) stopped while the
    archiver is ENABLED: errorCode 6004 at once; an image taken meanwhile is reported
    not retrieved. Back within `executor_fault_after`, the archiver catches the image
    up by itself; back later, the archiver went to FAULT, and catch-up at `enable`
    finishes the image."""
    fault_after = 300.0 if outcome == "recovers" else 1.0
    await cluster.up()
    settings = {"executor": cluster.address, "executor_fault_after": fault_after,
                "scheduler_timeout": 5.0, "sensors_in_flight": 4}  # fmt: skip
    async with (
        observatory(mosquitto, f"s{index}", tmp_path, archiver=settings) as obs,
        obs.archiver.remote.stream() as events,
        obs.camera.remote.stream("endReadout") as readouts,
    ):  # fmt: skip
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        first = await archived(events, 1)
        cluster.stop_scheduler()
        assert "scheduler" in await _error_code(events, ERROR_EXECUTOR_LOST)
        if outcome == "faults":  # then the image is not even tried: FAULT ignores it
            await obs.archiver.remote.wait_for_state(State.FAULT, timeout=30)
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        taken = [await readouts.next(30) for _ in range(2)][-1]
        if outcome == "recovers":
            _, failed = await outcomes(events, archived=0, failed=1)
            assert "Dask scheduler" in failed[0]["description"], failed
        await cluster.start_scheduler()
        await cluster.start_workers(2)  # as a site's supervisor would restart them
        if outcome == "faults":
            await obs.archiver.remote.command("standby")
            await obs.archiver.remote.command("start", {"configurationOverride": "test"},
                                              timeout=60)  # fmt: skip
            await obs.archiver.remote.command("enable")
        second = await archived(events, 1, timeout=90)
        assert second[0]["imageName"] == taken.data["imageName"]
    verify_all(obs, first + second, 2)
