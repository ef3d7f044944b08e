"""One sensor archived on a Dask worker: read from the DAQ, written into the archive,
only the file's metadata sent back.

A task is a :class:`SensorJob` (names, the DAQ's address, where the archive is, the
sensor's part of the header): tens of kilobytes at most. The worker reads the pixels
itself, from the DAQ at ``daq_url``, with the same retries as the archiver's own path
(:class:`~cscs.archiver.reader.DaqReads`), and writes the file the same way
(:class:`~cscs.archiver.writer.ArchiveFiles`): whole and synced under a temporary name,
which the archiver renames once its catalog has the row (ADR 0040). So no pixel passes
through the scheduler or the archiver CSC, and a task run twice (its first worker
killed mid-write) leaves one file: the archiver names the temporary whose result it
got and removes the other's.

The task is a coroutine, which Dask runs on the worker's event loop: the DAQ client is
asyncio (ZeroMQ), opened once per worker and DAQ and kept; the write itself runs in a
thread. Failures come back as a :class:`SensorOutcome` with a kind, not as exceptions,
so the archiver tells a DAQ that is gone (it times that towards FAULT) from a full
disk (FAULT at once) from a sensor the DAQ no longer has (left to catch-up).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import structlog

from cscs.archiver.headers import Header
from cscs.archiver.reader import DaqReads, ReadFailedError, open_daq_client
from cscs.archiver.writer import ArchiveFiles, ArchiveUnwritableError
from cscs.camera.checksum import Algorithm
from cscs.camera.fits import WrittenFile
from cscs.camera.geometry import camera_for_index
from cscs.cluster.identity import worker_name
from cscs.daq.reader import DaqReader, SensorPixels

__all__ = ["SensorJob", "SensorOutcome", "archive_sensor", "header_for"]

_log = structlog.get_logger("cscs.archiver.worker")

FailureKind = Literal["", "read", "unreachable", "unwritable"]


@dataclass(frozen=True)
class SensorJob:
    """Everything a worker needs to archive one sensor (pickled to it by Dask)."""

    image: str
    sensor: str
    header: Header | None  # the sensor's part of it (header_for)
    camera_index: int
    archive_root: str
    daq_url: str
    daq_timeout: float
    stall_timeout: float
    read_attempts: int
    compression: str = ""
    checksum: Algorithm = "adler32"
    min_free_bytes: int = 0


@dataclass(frozen=True)
class SensorOutcome:
    """What came of a job: the file written, or why not (``kind`` says what sort of
    failure ``failure`` describes)."""

    written: WrittenFile | None
    failure: str = ""
    kind: FailureKind = ""
    worker: str = field(default_factory=worker_name)


def header_for(header: Header | None, sensor: str) -> Header | None:
    """The header with only ``sensor``'s detector cards: what its task needs, a
    189th of a LSSTCam header's detector part."""
    if header is None:
        return None
    detectors = {sensor: header.detectors[sensor]} if sensor in header.detectors else {}
    return Header(header.url, header.md5, header.primary, detectors, header.segments,
                  header.missing, header.left_out)  # fmt: skip


# One reader per DAQ address, per worker process and event loop: opened by the first
# task that needs it, kept for the next ones (a site's workers serve one or two DAQs).
_readers: dict[tuple[str, float, float, int], DaqReader] = {}
_opening = asyncio.Lock()


async def _reader(job: SensorJob) -> DaqReader:
    loop_id = id(asyncio.get_running_loop())
    key = (job.daq_url, job.daq_timeout, job.stall_timeout, loop_id)
    async with _opening:
        reader = _readers.get(key)
        if reader is None:
            reader = await open_daq_client(job.daq_url, job.daq_timeout, job.stall_timeout)
            _readers[key] = reader
        return reader


async def archive_sensor(job: SensorJob) -> SensorOutcome:
    """Read ``job``'s sensor from the DAQ and write its file (runs on a Dask worker)."""
    log = _log.bind(image=job.image, sensor=job.sensor)
    reads = DaqReads(log, lambda why: None, attempts=job.read_attempts, fault_after=float("inf"))
    try:
        reads.daq = await _reader(job)
    except Exception as exc:  # an address the worker cannot open: nothing will pass
        return SensorOutcome(None, f"cannot read from the DAQ at {job.daq_url}: {exc}", "read")
    files = ArchiveFiles(
        Path(job.archive_root), camera_for_index(job.camera_index),
        compression=job.compression, checksum=job.checksum, min_free_bytes=job.min_free_bytes,
    )  # fmt: skip

    async def write(pixels: SensorPixels) -> WrittenFile:
        # Named by the archiver once the catalog has its row (ADR 0040): not here. The
        # pixels are checked against the DAQ's sums in the write's own pass (a corrupt
        # segment is read again, as on the archiver's own path: ADR 0041).
        return await asyncio.to_thread(files.write, pixels, job.header, publish=False)

    try:
        written = await reads.read(job.image, job.sensor, write)
    except ReadFailedError as exc:
        return SensorOutcome(None, str(exc), "unreachable" if exc.unreachable else "read")
    except ArchiveUnwritableError as exc:
        return SensorOutcome(None, str(exc), "unwritable")
    return SensorOutcome(written)  # a worker keeps no pixels between tasks
