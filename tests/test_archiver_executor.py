"""The archiver's Dask side without a cluster: how a worker's outcome becomes the local
path's errors, and how the scheduler watcher reports, faults and catches up."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog

from cscs.archiver.executor import DaskArchiving, watch_scheduler
from cscs.archiver.reader import DaqReads, ReadFailedError
from cscs.archiver.worker import SensorJob, SensorOutcome
from cscs.archiver.writer import ArchiveUnwritableError
from cscs.camera.fits import WrittenFile

JOB = SensorJob("AT_O_20261122_000001", "R00_S00", None, 1, "/archive", "tcp://daq:5555",
                2.0, 1.0, 2)  # fmt: skip


class Scripted(DaskArchiving):
    """A client whose tasks end as the test says, and whose scheduler comes and goes."""

    def __init__(self, outcome: SensorOutcome | None = None) -> None:
        super().__init__(engine=None, executor="tcp://scheduler:8786", timeout=1.0)  # type: ignore[arg-type]
        self.outcome = outcome
        self.up = True

    @property
    def connected(self) -> bool:
        return self.up

    async def run(self, job: SensorJob) -> SensorOutcome:
        assert self.outcome is not None
        return self.outcome

    async def reconnect(self) -> bool:
        return self.up


def _reads(unreachable: list[str]) -> DaqReads:
    return DaqReads(structlog.get_logger(), unreachable.append, fault_after=0.0)


async def test_a_file_written_on_a_worker_is_returned_and_the_daq_counted_as_answering() -> None:
    """A worker that read from the DAQ ends its silence: a later silence is timed
    towards FAULT from its own start, not from the first one's."""
    written = WrittenFile(Path("/archive/x.fits"), 10, "0a0b0c0d", "adler32")
    faults: list[str] = []
    now = [0.0]
    reads = DaqReads(structlog.get_logger(), faults.append, fault_after=5.0, clock=lambda: now[0])
    reads.unreachable("silence")  # the DAQ silent at 0 s; at 10 s a worker reads from it
    now[0] = 10.0
    assert await Scripted(SensorOutcome(written)).write(JOB, reads) == written
    reads.unreachable("silence again")  # silent since 10 s: not 10 s of silence
    assert faults == []
    now[0] = 16.0
    reads.unreachable("silence still")  # 6 s of it now: more than fault_after
    assert faults


@pytest.mark.parametrize(
    ("kind", "error"),
    [("read", ReadFailedError), ("unreachable", ReadFailedError),
     ("unwritable", ArchiveUnwritableError)],
)  # fmt: skip
async def test_a_worker_failure_is_the_local_path_error(kind: Any, error: type) -> None:
    faults: list[str] = []
    reads = _reads(faults)
    outcome = SensorOutcome(None, "no answer from tcp://daq:5555", kind, "w1:42")
    with pytest.raises(error, match="no answer"):
        await Scripted(outcome).write(JOB, reads)
    if kind == "unreachable":  # counted towards 6001 as the archiver's own reads are
        with pytest.raises(ReadFailedError):
            await Scripted(outcome).write(JOB, reads)
        assert faults, "a DAQ silent past daq_unreachable_fault_after is a FAULT"
    else:
        assert faults == []


async def test_no_daq_known_is_a_read_failure_before_any_task() -> None:
    with pytest.raises(ReadFailedError, match="no DAQ known"):
        await Scripted().write(SensorJob(**{**JOB.__dict__, "daq_url": ""}), _reads([]))


async def test_the_watcher_reports_the_loss_faults_if_it_lasts_and_catches_up_after() -> None:
    dask = Scripted()
    said: asyncio.Queue[str] = asyncio.Queue()

    async def lost(why: str) -> None:
        said.put_nowait(f"lost: {why}")

    watcher = asyncio.create_task(watch_scheduler(
        lambda: dask, lambda: 0.0, lost, lambda why: said.put_nowait(f"lasted: {why}"),
        lambda: said.put_nowait("back"), period=0.0,
    ))  # fmt: skip
    try:
        dask.up = False
        assert (await asyncio.wait_for(said.get(), 10)).startswith("lost: the Dask scheduler")
        assert (await asyncio.wait_for(said.get(), 10)).startswith("lasted: the Dask scheduler")
        dask.up = True
        assert await asyncio.wait_for(said.get(), 10) == "back"
        assert said.empty()  # one report of each, not one per look
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
