"""Each sensor of an image from the DAQ into the archive: read (verified, retried:
:mod:`~cscs.archiver.reader`), written whole and recorded (:mod:`~cscs.archiver.store`),
announced (``imageArchived``); in this process (``executor: local``), or read and
written by a Dask worker and recorded here (:mod:`~cscs.archiver.executor`). An image is
the set of its sensors: one ``imageRetrievalFailed`` for those that could not be read
(each left to catch-up), one ``latestImage`` for those that were.

:class:`SensorPipeline` holds what this runs on, switched as a whole by each
configuration (:meth:`SensorPipeline.use`): the archive and its catalog, the DAQ, the
Dask client. And its bounds: an ``(image, sensor)`` is under way once at most, whichever
asked for it (an ``endReadout``, catch-up, its header completing it:
:mod:`~cscs.archiver.completion`), and at most ``sensors_in_flight`` hold pixels at
once. What it does is counted for ``archiverStatus`` (:mod:`~cscs.archiver.status`).

A sensor that cannot be read is that sensor's failure; an archive that cannot take the
file, or a catalog that fails, is no sensor's: ``fatal`` (the CSC goes to FAULT with the
``errorCode`` naming it). The pipeline knows the CSC only through what it is given.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from cscs.archiver.completion import HeaderCompletion
from cscs.archiver.executor import DaskArchiving, ExecutorLostError, sensor_job
from cscs.archiver.headers import Header, HeaderSource
from cscs.archiver.interface import (
    ARCHIVER_STATUS,
    ERROR_ARCHIVE_UNWRITABLE,
    ERROR_CATALOG,
    ERROR_DAQ_UNREACHABLE,
    IMAGE_ARCHIVED,
    IMAGE_RETRIEVAL_FAILED,
    ArchiverConfig,
    ImageArchived,
    ImageRetrievalFailed,
    retrieval_failed,
)
from cscs.archiver.reader import DaqReads, ReadFailedError
from cscs.archiver.resources import Opened
from cscs.archiver.status import StatusReport
from cscs.archiver.store import ArchiveStore, ArchiveUnwritableError, Provenance
from cscs.camera.checksum import check_algorithm
from cscs.camera.events import LATEST_IMAGE, LatestImage
from cscs.camera.fits import WrittenFile
from cscs.catalog import ArchivedFile, CatalogError
from cscs.core.schema import EventSpec, Payload, TelemetrySpec
from cscs.core.tasks import Jobs
from cscs.daq.reader import DaqReader, SensorPixels

__all__ = ["MAX_IMAGES_IN_FLIGHT", "SensorPipeline"]

#: Images being archived at once (each waiting for its header, then its sensors): more
#: than any camera produces while the header service is down for ``header_timeout``; a
#: flood of forged ``endReadout`` events beyond it is dropped (catch-up archives any
#: real image among them later).
MAX_IMAGES_IN_FLIGHT = 64

#: The CSC's publishing (:meth:`~cscs.core.csc.BaseCsc.publish_event`, ``publish_telemetry``).
PublishEvent = Callable[[EventSpec[Payload], Payload], Awaitable[object]]
PublishTelemetry = Callable[[TelemetrySpec[Payload], Payload], Awaitable[object]]
#: Go to FAULT with (``errorCode``, report), from inside a job.
Fatal = Callable[[int, str], None]


class SensorPipeline:
    """Archives the sensors of one camera's images, in the CSC's jobs. The CSC switches
    it to each configuration (:meth:`use`) and to the DAQ the camera announces
    (:meth:`use_daq`), hands it each image read out (:meth:`archive_image`) and each
    sensor catch-up finds missing (:meth:`archive_sensor`, then :meth:`report_failures`),
    and closes it last (:meth:`close`)."""

    def __init__(
        self,
        config: ArchiverConfig,
        *,
        headers: HeaderSource,
        publish_event: PublishEvent,
        publish_telemetry: PublishTelemetry,
        fatal: Fatal,
        jobs: Jobs,
        log: FilteringBoundLogger,
        version: str,
    ) -> None:
        self.config = config
        self.headers = headers
        self.reads = DaqReads(log, functools.partial(fatal, ERROR_DAQ_UNREACHABLE))
        self.store: ArchiveStore | None = None
        self.dask: DaskArchiving | None = None  # executor: dask-local or a scheduler
        self.in_flight: set[tuple[str, str]] = set()  # (image, sensor) under way
        # Set when the archiving of (image, sensor) under way ends, written or not.
        self._under_way: dict[tuple[str, str], asyncio.Event] = {}
        self.images_in_flight: set[str] = set()
        self._publish = publish_event
        self._fatal = fatal
        self._log = log
        self._version = version
        self._slots = asyncio.Semaphore(config.sensors_in_flight)
        self.status = StatusReport(
            lambda status: publish_telemetry(ARCHIVER_STATUS, status),
            lambda: self.store, self.in_flight,
        )  # fmt: skip
        self.completion = HeaderCompletion(
            store=self.current_store, headers=headers, in_flight=self.in_flight,
            rewrite=functools.partial(self._write, replacing=True),
            header_wait=lambda: self.config.header_timeout, jobs=jobs, log=log,
            fatal=fatal, failed=self.left_to_catch_up,
        )  # fmt: skip

    # ---- what it runs on ---------------------------------------------------------------

    async def use(self, config: ArchiverConfig, opened: Opened) -> None:
        """Switch to ``config`` and what was opened for it
        (:func:`~cscs.archiver.resources.open_configured`), closing what they replace."""
        self.config = config
        if opened.dask is not self.dask:
            previous, self.dask = self.dask, opened.dask
            if previous is not None:
                await previous.close()
            if self.dask is not None:
                self._log.info("archiving on Dask", executor=config.executor,
                               dashboard=self.dask.engine.dashboard)  # fmt: skip
        if opened.stale:
            self._log.warning("removed files left half-written by a crash", count=opened.stale)
        if opened.store.named_at_open:
            self._log.warning("named files a crash left recorded but not yet renamed",
                              count=opened.store.named_at_open)  # fmt: skip
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        self.store = opened.store
        if opened.daq is not None:
            await self.use_daq(opened.daq)
        self.reads.attempts = config.read_attempts
        self.reads.fault_after = config.daq_unreachable_fault_after
        self._slots = asyncio.Semaphore(config.sensors_in_flight)

    async def use_daq(self, daq: DaqReader) -> None:
        """Read from ``daq`` from now on (the one configured, or the camera's)."""
        previous, self.reads.daq = self.reads.daq, daq
        if previous is not None:
            await previous.close()
        self._log.info("reading pixels from the DAQ", url=daq.endpoint)

    @property
    def daq_endpoint(self) -> str:
        """The DAQ read from ("" while there is none)."""
        return self.reads.daq.endpoint if self.reads.daq is not None else ""

    def current_store(self) -> ArchiveStore:
        """The archive; CatalogError before the first configuration."""
        if self.store is None:
            raise CatalogError("the archiver has no archive or catalog: start it first")
        return self.store

    async def close(self) -> None:
        """Close the DAQ, the Dask client and the archive (which waits for the files
        still being written)."""
        if self.reads.daq is not None:
            await self.reads.daq.close()
            self.reads.daq = None
        if self.dask is not None:
            await self.dask.close()
            self.dask = None
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    # ---- images and sensors ------------------------------------------------------------

    async def archive_image(self, image: str, sensors: list[str]) -> None:
        """Each of ``sensors`` (names checked by the caller), waiting ``header_timeout``
        for the header; then one event for those that could not be read, and
        ``latestImage`` if any was archived."""
        failures: dict[str, str] = {}
        self.images_in_flight.add(image)
        try:
            done = await asyncio.gather(
                *(self.archive_sensor(image, s, failures, header_wait=self.config.header_timeout)
                  for s in sensors)
            )  # fmt: skip
        finally:
            self.images_in_flight.discard(image)
            await self.report_failures(image, failures)
        if any(done):
            description = f"archived {sum(done)} of {len(sensors)} files"
            await self._publish(LATEST_IMAGE, LatestImage(imageName=image, description=description))

    async def archive_sensor(
        self, image: str, sensor: str, failures: dict[str, str], *, header_wait: float
    ) -> bool:
        """Archive one sensor of this camera's (names checked by the caller) unless it is
        archived or under way; True if archived now, and a sensor that could not be read
        noted in ``failures`` with the reason (the caller reports them, one event per image:
        :meth:`report_failures`).

        The header is awaited before a slot is taken: while the header service is down,
        each image waits out ``header_timeout`` on its own, holding no pixels, and the
        images behind it are not held up."""
        key = (image, sensor)
        if key in self.in_flight:
            # Under way on another path (a live endReadout, another catch-up pass): wait
            # for it to end, so that a catchUp done means its files are written.
            under_way = self._under_way.get(key)
            if under_way is not None:
                await under_way.wait()
            return False
        self.in_flight.add(key)
        self._under_way[key] = done = asyncio.Event()
        try:
            store = self.current_store()
            if await asyncio.to_thread(store.is_archived, image, sensor):
                return False  # archived already: a repeated endReadout, or catch-up
            header = await self.headers.get(image, wait=header_wait)
            async with self._slots:
                try:
                    if self.dask is None:
                        write = functools.partial(self._store_file, store, header)
                        row = await self.reads.read(image, sensor, write)
                        await self._announce(row, header, replacing=False)
                    else:
                        await self._write_on_dask(self.dask, store, image, sensor, header)
                except (ReadFailedError, ExecutorLostError) as exc:
                    failures[sensor] = str(exc)
                    return False
                if header is None and self.headers.is_announced(image):
                    self.completion.soon(image)  # announced while this file was written
                return True
        except CatalogError as exc:
            self._fatal(ERROR_CATALOG, str(exc))
            return False
        except ArchiveUnwritableError as exc:
            self._fatal(ERROR_ARCHIVE_UNWRITABLE, str(exc))
            return False
        finally:
            self.in_flight.discard(key)
            del self._under_way[key]
            done.set()

    async def report_failures(self, image: str, failures: dict[str, str]) -> None:
        """One ``imageRetrievalFailed`` for all of an image's sensors that could not be
        read this time (each left to catch-up): however many sensors a message names,
        one event per image and attempt."""
        if failures:
            await self._publish(IMAGE_RETRIEVAL_FAILED, retrieval_failed(image, failures))

    async def left_to_catch_up(self, image: str, exc: BaseException) -> None:
        """What an unexpected failure (a bug) of an image's job comes to: said on the
        bus, and the image left to catch-up."""
        why = f"archiving failed unexpectedly (left to catch-up): {exc!r}"
        await self._publish(
            IMAGE_RETRIEVAL_FAILED,
            ImageRetrievalFailed(imageName=image, sensor="", description=why),
        )

    # ---- one file ------------------------------------------------------------------------

    async def _write(
        self,
        store: ArchiveStore,
        pixels: SensorPixels,
        header: Header | None,
        *,
        replacing: bool = False,
    ) -> None:
        """Write and record the file here, and say so (``replacing``: a file completed
        with its header)."""
        row = await self._store_file(store, header, pixels)
        await self._announce(row, header, replacing=replacing)

    async def _store_file(
        self, store: ArchiveStore, header: Header | None, pixels: SensorPixels
    ) -> ArchivedFile:
        """The file written (its pixels checked against their sums in the same pass:
        ChecksumMismatchError, nothing written) and recorded here."""
        provenance = Provenance(self.daq_endpoint, self._version)
        return await asyncio.to_thread(store.write, pixels, header, provenance)

    async def _write_on_dask(
        self, dask: DaskArchiving, store: ArchiveStore, image: str, sensor: str,
        header: Header | None,
    ) -> None:  # fmt: skip
        """One sensor read and written by a Dask worker, then recorded and announced
        here; the errors of the local path, and ExecutorLostError."""
        job = sensor_job(self.config, image, sensor, header, store.camera.value, store.root,
                         self.daq_endpoint)  # fmt: skip
        written = await dask.write(job, self.reads)
        await self._record(store, image, sensor, written, header)

    async def _record(
        self, store: ArchiveStore, image: str, sensor: str, written: WrittenFile,
        header: Header | None,
    ) -> None:  # fmt: skip
        provenance = Provenance(self.daq_endpoint, self._version)
        row = await asyncio.to_thread(store.record, image, sensor, written, header, provenance)
        await self._announce(row, header, replacing=False)

    async def _announce(self, row: ArchivedFile, header: Header | None, *, replacing: bool) -> None:
        self.status.written(row.byte_size, replacing=replacing)
        await self._publish(
            IMAGE_ARCHIVED,
            ImageArchived(
                imageName=row.image_name, sensor=row.sensor, url=Path(row.path).as_uri(),
                byteSize=row.byte_size, checkSum=row.checksum,
                checkSumAlgorithm=check_algorithm(row.checksum_algorithm),
                headerComplete=row.header_complete,
                statusCode=0 if header is not None else 1,
                description="archived" if header else "archived without its header",
            ),
        )  # fmt: skip
