"""Archiving on Dask, seen from the archiver CSC: one task per (image, sensor), and
the scheduler watched.

``executor: dask-local`` starts a ``LocalCluster`` of worker processes owned by the CSC;
an address (``tcp://host:8786``) joins a site's scheduler, whose workers may be on other
hosts. Either way a task (:func:`cscs.archiver.worker.archive_sensor`) reads its sensor
from the DAQ and writes its file on the worker; the CSC submits it, receives a few
hundred bytes of metadata, and keeps everything that must be in one place: the
catalog, the events, the order and the bound on work in flight.

What is lost, and how it comes back:

* a worker dies mid-task: the scheduler runs the task again on another worker (Dask's
  ``allowed-failures``); the CSC catalogues the temporary of the one result it gets,
  then names it and removes the other attempts' (ADR 0040);
* the scheduler is lost: Dask cancels every task the CSC was waiting for
  (:class:`ExecutorLostError`: those sensors are left to catch-up), the client tries to
  reconnect, and :meth:`DaskArchiving.reconnect` makes a new one once it has given up.
  The CSC reports the loss, goes to FAULT if it lasts, and catches up when it is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from distributed import KilledWorker
from distributed.client import FutureCancelledError

from cscs.archiver.headers import Header
from cscs.archiver.interface import ArchiverConfig
from cscs.archiver.reader import DaqReads, ReadFailedError
from cscs.archiver.worker import SensorJob, SensorOutcome, archive_sensor, header_for
from cscs.archiver.writer import ArchiveUnwritableError
from cscs.camera.fits import WrittenFile
from cscs.cluster import Engine, EngineError

__all__ = ["DaskArchiving", "ExecutorLostError", "sensor_job", "watch_scheduler"]


class ExecutorLostError(Exception):
    """The Dask scheduler was lost while a task was waited for; it may have run."""


def sensor_job(
    config: ArchiverConfig, image: str, sensor: str, header: Header | None, camera_index: int,
    root: Path, daq_url: str,
) -> SensorJob:  # fmt: skip
    """The task for one sensor, as ``config`` says to archive it."""
    return SensorJob(
        image, sensor, header_for(header, sensor), camera_index, str(root), daq_url,
        config.daq_timeout, config.stall_timeout, config.read_attempts, config.compression,
        config.checksum_algorithm, config.min_free_bytes,
    )  # fmt: skip


class DaskArchiving:
    """The archiver's Dask client (and, for ``dask-local``, the cluster it owns)."""

    def __init__(self, engine: Engine, executor: str, timeout: float) -> None:
        self.engine = engine
        self.executor = executor
        self._timeout = timeout

    @classmethod
    async def start(
        cls, executor: str, workers: int, threads_per_worker: int, timeout: float
    ) -> DaskArchiving:
        """EngineError naming the scheduler if it cannot be started or reached."""
        scheduler = "local" if executor == "dask-local" else executor
        engine = await Engine.start(scheduler, workers, threads_per_worker, timeout)
        return cls(engine, executor, timeout)

    @property
    def connected(self) -> bool:
        return str(self.engine.client.status) == "running"

    async def run(self, job: SensorJob) -> SensorOutcome:
        """Run ``job`` on a worker; ExecutorLostError if the scheduler goes away first.
        Cancelled (the CSC stopping), the task is cancelled on the cluster too."""
        if not self.connected:  # a task submitted now would wait for a reconnection
            raise ExecutorLostError(f"the Dask scheduler {self.executor} is not connected")
        key = f"archive-{job.image}-{job.sensor}-{secrets.token_hex(4)}"
        try:
            future = self.engine.client.submit(archive_sensor, job, key=key, pure=False)
        except Exception as exc:  # a client closed after the scheduler was lost
            raise ExecutorLostError(f"cannot submit to the Dask scheduler: {exc}") from exc
        try:
            outcome = await future
        except FutureCancelledError as exc:  # before asyncio's CancelledError: a subclass
            raise ExecutorLostError(f"the Dask scheduler was lost: {exc}") from exc
        except KilledWorker as exc:  # every worker it went to died: not this sensor's fault
            return SensorOutcome(None, f"Dask workers kept dying on it: {exc}", "read")
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.engine.client.cancel([future], force=True))
            raise
        if not isinstance(outcome, SensorOutcome):  # a scheduler of another program
            return SensorOutcome(None, f"a Dask worker answered {type(outcome).__name__}", "read")
        return outcome

    async def write(self, job: SensorJob, reads: DaqReads) -> WrittenFile:
        """:meth:`run`, with the local path's errors: ReadFailedError (the DAQ's
        silence counted by ``reads`` towards FAULT, as its own reads are),
        ArchiveUnwritableError, and ExecutorLostError."""
        if not job.daq_url:
            raise ReadFailedError("no DAQ known yet (no daqAvailable from the camera, no daq_url)")
        outcome = await self.run(job)
        if outcome.written is not None:
            reads.reachable()
            return outcome.written
        if outcome.kind == "unwritable":
            raise ArchiveUnwritableError(outcome.failure)
        if outcome.kind == "unreachable":
            reads.unreachable(outcome.failure)
        raise ReadFailedError(f"{outcome.failure} (on {outcome.worker})")

    async def reconnect(self) -> bool:
        """A new client once Dask's own has given up reconnecting (it closes itself);
        True if connected now."""
        if self.connected:
            return True
        if self.executor == "dask-local" or str(self.engine.client.status) != "closed":
            return False  # its scheduler is in this process; or Dask is still trying
        try:
            engine = await Engine.start(self.executor, 0, 0, self._timeout)
        except EngineError:
            return False
        old, self.engine = self.engine, engine
        await old.close()
        return True

    async def workers(self) -> int:
        """Workers the scheduler has now."""
        return (await self.engine.workers())[0]

    async def close(self) -> None:
        await self.engine.close()


async def watch_scheduler(
    current: Callable[[], DaskArchiving | None],
    fault_after: Callable[[], float],
    lost: Callable[[str], Awaitable[None]],
    lasted: Callable[[str], None],
    back: Callable[[], None],
    *,
    period: float = 1.0,
) -> None:
    """Look at the scheduler every ``period`` seconds, for ever: ``lost(why)`` when it
    goes, ``lasted(why)`` once it has been gone ``fault_after()`` seconds, ``back()``
    when the archiver has it again (a new client made if Dask's gave up)."""
    lost_since: float | None = None
    faulted = False
    while True:
        await asyncio.sleep(period)
        dask = current()
        if dask is None or await dask.reconnect():
            if lost_since is not None and dask is not None:
                back()
            lost_since, faulted = None, False
            continue
        now = time.monotonic()
        if lost_since is None:
            lost_since = now
            await lost(f"the Dask scheduler {dask.executor} is lost; its tasks are left to "
                       "catch-up")  # fmt: skip
        elif not faulted and now - lost_since > fault_after():
            faulted = True
            lasted(f"the Dask scheduler {dask.executor} has been lost for "
                   f"{now - lost_since:.0f} s")  # fmt: skip
