"""The Archiver CSC: every image, whole and verified, into the archive and its catalog.

``Archiver:{index}`` follows ``Camera:{index}`` and ``HeaderService:{index}``. On
``endReadout`` it archives each listed sensor, a bounded number at once: the pixels read
from the DAQ (:mod:`~cscs.archiver.reader`: verified, retried), the header announced for
the image (:mod:`~cscs.archiver.headers`: waited for up to ``header_timeout``, MD5
checked), one FITS file per detector written and recorded
(:mod:`~cscs.archiver.store`), then ``imageArchived`` — or ``imageRetrievalFailed``,
leaving the sensor to catch-up.

Catch-up (:mod:`~cscs.archiver.catchup`, :mod:`~cscs.archiver.plan`) archives what the
DAQ holds and the catalog lacks, oldest first: on ``catchUp``, on ``enable`` and every
``catchup_interval`` while ENABLED. A file archived without its header is rewritten with
it when the header turns up (:mod:`~cscs.archiver.completion`). Nothing is archived
twice: the catalog and the sensors in flight are checked before any work starts.
``archiverStatus`` is counted and sent by :mod:`~cscs.archiver.status`.

FAULT, with an ``errorCode`` naming the cause: the DAQ unreachable for longer than
``daq_unreachable_fault_after`` (6001), the archive unwritable or full (6002), the
catalog failing (6003).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cscs.archiver.catchup import CatchUp, catch_up_periodically
from cscs.archiver.completion import HeaderCompletion
from cscs.archiver.executor import DaskArchiving, ExecutorLostError, sensor_job, watch_scheduler
from cscs.archiver.headers import Header, HeaderSource
from cscs.archiver.interface import (
    ARCHIVER_STATUS,
    CATCH_UP,
    ERROR_ARCHIVE_UNWRITABLE,
    ERROR_CATALOG,
    ERROR_DAQ_UNREACHABLE,
    ERROR_EXECUTOR_LOST,
    IMAGE_ARCHIVED,
    IMAGE_RETRIEVAL_FAILED,
    INTERFACE,
    ArchiverConfig,
    ImageArchived,
    ImageRetrievalFailed,
    retrieval_failed,
)
from cscs.archiver.reader import DaqOpener, DaqReads, ReadFailedError, open_daq_client
from cscs.archiver.resources import open_configured
from cscs.archiver.status import StatusReport
from cscs.archiver.store import ArchiveStore, ArchiveUnwritableError, Provenance, check_names
from cscs.camera.checksum import check_algorithm
from cscs.camera.events import (
    DAQ_AVAILABLE,
    END_READOUT,
    LATEST_IMAGE,
    DaqAvailable,
    EndReadout,
    LatestImage,
)
from cscs.camera.fits import WrittenFile
from cscs.camera.geometry import Camera, camera_for_index
from cscs.camera.headers.announcement import LARGE_FILE_OBJECT_AVAILABLE, LargeFileObjectAvailable
from cscs.catalog import ArchivedFile, CatalogError
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.follow import on
from cscs.core.logs import Throttle
from cscs.core.remote import Parsed
from cscs.core.schema import NoParams
from cscs.core.states import State
from cscs.core.topics import CscAddress
from cscs.daq.reader import DaqReader, SensorPixels

__all__ = ["ArchiverConfig", "ArchiverCsc"]

#: Images being archived at once (each waiting for its header, then its sensors): more
#: than any camera produces while the header service is down for ``header_timeout``; a
#: flood of forged ``endReadout`` events beyond it is dropped (catch-up archives any
#: real image among them later).
MAX_IMAGES_IN_FLIGHT = 64


class ArchiverCsc(BaseCsc[ArchiverConfig]):
    interface = INTERFACE
    config_schema = ArchiverConfig
    default_config_dir: ClassVar[Path | None] = Path(__file__).parent / "config"

    def __init__(
        self, index: int = 1, *, open_daq: DaqOpener = open_daq_client, **kwargs: Any
    ) -> None:
        self.camera: Camera = camera_for_index(index)
        super().__init__(index, **kwargs)
        self.camera_address = CscAddress("Camera", index, self.address.prefix)
        self.header_address = CscAddress("HeaderService", index, self.address.prefix)
        self.store: ArchiveStore | None = None
        self.dask: DaskArchiving | None = None  # executor: dask-local or a scheduler
        self.headers = HeaderSource(self.log)
        self.reads = DaqReads(self.log, self._daq_unreachable)
        self._in_flight: set[tuple[str, str]] = set()
        self.status_report = StatusReport(
            lambda status: self.publish_telemetry(ARCHIVER_STATUS, status),
            lambda: self.store, self._in_flight,
        )  # fmt: skip
        self.completion = HeaderCompletion(
            store=self._store, headers=self.headers, in_flight=self._in_flight,
            rewrite=functools.partial(self._store_file, replacing=True),
            header_wait=lambda: self.config.header_timeout, jobs=self.jobs, log=self.log,
            fatal=self._fatal, failed=self._left_to_catch_up,
        )  # fmt: skip
        self.catch_up = CatchUp(
            self.camera, self.headers, self._catch_up_one, self.completion.complete, self.log,
            header_timeout=lambda: self.config.header_timeout,
        )  # fmt: skip
        self._open_daq = open_daq
        self._images_in_flight: set[str] = set()
        self._catch_up_failures: dict[str, dict[str, str]] = {}
        self._too_many = Throttle()
        self._slots = asyncio.Semaphore(self.config.sensors_in_flight)
        self._fatal_task: asyncio.Task[None] | None = None
        self._reconfigured = asyncio.Event()

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [bind(CATCH_UP, self.do_catch_up)]

    # ---- life ------------------------------------------------------------------------

    async def configure(self, config: ArchiverConfig) -> None:
        """Open what the configuration names first, then switch to it: a refusal (an
        unwritable archive, a catalog or DAQ that cannot be opened) changes nothing."""
        opened = await open_configured(
            config, self.camera, self.state_dir / "archive", self._open_daq,
            self._daq_endpoint(), self.dask,
        )  # fmt: skip
        store, stale, daq = opened.store, opened.stale, opened.daq
        if opened.dask is not self.dask:
            previous, self.dask = self.dask, opened.dask
            if previous is not None:
                await previous.close()
            if self.dask is not None:
                self.log.info("archiving on Dask", executor=config.executor,
                              dashboard=self.dask.engine.dashboard)  # fmt: skip
        if stale:
            self.log.warning("removed files left half-written by a crash", count=stale)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        self.store = store
        if daq is not None:
            await self._switch_daq(daq)
        self.headers.template = config.header_template(self.state_dir, self.address.index)
        self.headers.trust = config.header_trust(self.state_dir)
        self.reads.attempts = config.read_attempts
        self.reads.fault_after = config.daq_unreachable_fault_after
        self._slots = asyncio.Semaphore(config.sensors_in_flight)
        self._reconfigured.set()
        await self.unfollow()
        await self.follow_events(
            self.camera_address,
            on(END_READOUT, self._on_end_readout),
            on(DAQ_AVAILABLE, self._on_daq),
        )
        await self.follow(self.header_address, LARGE_FILE_OBJECT_AVAILABLE, self._on_header)

    async def __aenter__(self) -> ArchiverCsc:
        await super().__aenter__()
        self.keep_running(self.status_report.run, "status")
        self.keep_running(self._catch_up_loop, "catch-up")
        self.keep_running(self._watch_scheduler, "scheduler")
        return self

    async def close(self) -> None:
        await self.unfollow()  # first: nothing heard from now on starts a job
        if self._fatal_task is not None:
            await asyncio.wait([self._fatal_task], timeout=10.0)
        await self.jobs.cancel("stopping archive jobs")
        await super().close()
        if self.reads.daq is not None:
            await self.reads.daq.close()
            self.reads.daq = None
        if self.dask is not None:
            await self.dask.close()
            self.dask = None
        if self.store is not None:
            await asyncio.to_thread(self.store.close)  # waits for files still being written

    async def end_enable(self, params: NoParams) -> None:
        self.jobs.spawn(self._catch_up_quietly("at enable"), "catch-up at enable")

    async def state_changed(self, old: State, new: State) -> None:
        if old is State.ENABLED:
            await self.jobs.cancel("stopping archive jobs")

    def _fatal(self, code: int, report: str) -> None:
        """Go to FAULT from inside a job: in a task of its own, because going to FAULT
        cancels and waits for every job, the one reporting included."""
        if self._fatal_task is None or self._fatal_task.done():
            self._fatal_task = asyncio.create_task(
                self.fault(code, report), name=f"{self.address}-fault"
            )

    def _daq_unreachable(self, report: str) -> None:
        self._fatal(ERROR_DAQ_UNREACHABLE, report)

    def _daq_endpoint(self) -> str:
        return self.reads.daq.endpoint if self.reads.daq is not None else ""

    async def _switch_daq(self, daq: DaqReader) -> None:
        previous, self.reads.daq = self.reads.daq, daq
        if previous is not None:
            await previous.close()
        self.log.info("reading pixels from the DAQ", url=daq.endpoint)

    async def _follow_camera_daq(self, url: str) -> None:
        try:
            daq = await self._open_daq(url, self.config.daq_timeout, self.config.stall_timeout)
        except Exception as exc:
            self.log.error("cannot read from the DAQ the camera announced", url=url,
                           error=str(exc))  # fmt: skip
            return
        await self._switch_daq(daq)

    # ---- what we hear ------------------------------------------------------------------

    def _on_daq(self, message: Parsed[DaqAvailable]) -> None:
        url = message.data.endpoint
        if url and not self.config.daq_url and url != self._daq_endpoint():
            self.jobs.spawn(self._follow_camera_daq(url), "daq")

    def _on_header(self, message: Parsed[LargeFileObjectAvailable]) -> None:
        self.headers.announce(message.data)
        if self.state is State.ENABLED:  # complete files archived without it
            self.completion.soon(message.data.id)

    def _on_end_readout(self, message: Parsed[EndReadout]) -> None:
        if self.state is not State.ENABLED or message.retained:
            return
        image, sensors = message.data.imageName, message.data.sensor_names
        try:
            for sensor in sensors:
                check_names(self.camera, image, sensor)
        except ValueError as exc:  # ICD §5: a name that does not match is dropped, logged
            self.log.warning("ignored an endReadout naming what this archiver cannot archive",
                             image=image, error=str(exc))  # fmt: skip
            return
        if image in self._images_in_flight:
            self.log.info("endReadout repeated for an image under way; ignored", image=image)
            return
        if len(self._images_in_flight) >= MAX_IMAGES_IN_FLIGHT:
            self._too_many.warning(
                self.log, "too many images under way: this one is left to catch-up", image=image
            )
            return
        self.jobs.spawn(
            self._archive_image(image, sensors), f"image-{image}",
            on_error=lambda exc: self._left_to_catch_up(image, exc),
        )  # fmt: skip

    # ---- archiving -----------------------------------------------------------------------

    async def _archive_image(self, image: str, sensors: list[str]) -> None:
        failures: dict[str, str] = {}
        self._images_in_flight.add(image)
        try:
            done = await asyncio.gather(
                *(self._archive_sensor(image, s, failures, header_wait=self.config.header_timeout)
                  for s in sensors)
            )  # fmt: skip
        finally:
            self._images_in_flight.discard(image)
            await self._report_failures(image, failures)
        if any(done):
            description = f"archived {sum(done)} of {len(sensors)} files"
            await self.publish_event(
                LATEST_IMAGE, LatestImage(imageName=image, description=description)
            )

    async def _archive_sensor(
        self, image: str, sensor: str, failures: dict[str, str], *, header_wait: float
    ) -> bool:
        """Archive one sensor of this camera's (names checked by the caller) unless it is
        archived or under way; True if archived now, and a sensor that could not be read
        noted in ``failures`` with the reason (the caller reports them, one event per image).

        The header is awaited before a slot is taken: while the header service is down,
        each image waits out ``header_timeout`` on its own, holding no pixels, and the
        images behind it are not held up."""
        key = (image, sensor)
        if key in self._in_flight:
            return False
        self._in_flight.add(key)
        try:
            store = self._store()
            if await asyncio.to_thread(store.is_archived, image, sensor):
                return False  # archived already: a repeated endReadout, or catch-up
            header = await self.headers.get(image, wait=header_wait)
            async with self._slots:
                try:
                    if self.dask is None:
                        pixels = await self.reads.read(image, sensor)
                        await self._store_file(store, pixels, header)
                    else:
                        await self._archive_on_dask(self.dask, store, image, sensor, header)
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
            self._in_flight.discard(key)

    async def _report_failures(self, image: str, failures: dict[str, str]) -> None:
        """One ``imageRetrievalFailed`` for all of an image's sensors that could not be
        read this time (each left to catch-up): however many sensors a message names,
        one event per image and attempt."""
        if failures:
            await self.publish_event(IMAGE_RETRIEVAL_FAILED, retrieval_failed(image, failures))

    async def _left_to_catch_up(self, image: str, exc: BaseException) -> None:
        """What an unexpected failure (a bug) of an image's job comes to: said on the
        bus, and the image left to catch-up."""
        why = f"archiving failed unexpectedly (left to catch-up): {exc!r}"
        await self.publish_event(
            IMAGE_RETRIEVAL_FAILED,
            ImageRetrievalFailed(imageName=image, sensor="", description=why),
        )

    async def _archive_on_dask(
        self, dask: DaskArchiving, store: ArchiveStore, image: str, sensor: str,
        header: Header | None,
    ) -> None:  # fmt: skip
        """One sensor read and written by a Dask worker, then catalogued and announced
        here; the errors of the local path, and ExecutorLostError."""
        job = sensor_job(self.config, image, sensor, header, self.address.index,
                         store.root, self._daq_endpoint())  # fmt: skip
        written = await dask.write(job, self.reads)
        await self._record_file(store, image, sensor, written, header)

    async def _record_file(
        self, store: ArchiveStore, image: str, sensor: str, written: WrittenFile,
        header: Header | None,
    ) -> None:  # fmt: skip
        provenance = Provenance(self._daq_endpoint(), self.version)
        row = await asyncio.to_thread(store.record, image, sensor, written, header, provenance)
        await self._announce(row, header, replacing=False)

    async def _watch_scheduler(self) -> None:
        await watch_scheduler(
            lambda: self.dask, lambda: self.config.executor_fault_after,
            lambda why: self.report_error(ERROR_EXECUTOR_LOST, why),
            lambda why: self._fatal(ERROR_EXECUTOR_LOST, why),
            self._catch_up_after_scheduler,
        )  # fmt: skip

    def _catch_up_after_scheduler(self) -> None:
        self.jobs.spawn(self._catch_up_quietly("the Dask scheduler is back"), "catch-up")

    def _store(self) -> ArchiveStore:
        if self.store is None:
            raise CatalogError("the archiver has no archive or catalog: start it first")
        return self.store

    async def _store_file(
        self,
        store: ArchiveStore,
        pixels: SensorPixels,
        header: Header | None,
        *,
        replacing: bool = False,
    ) -> None:
        provenance = Provenance(self._daq_endpoint(), self.version)
        row = await asyncio.to_thread(store.write, pixels, header, provenance)
        await self._announce(row, header, replacing=replacing)

    async def _announce(self, row: ArchivedFile, header: Header | None, *, replacing: bool) -> None:
        self.status_report.written(row.byte_size, replacing=replacing)
        await self.publish_event(
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

    # ---- catch-up --------------------------------------------------------------------

    async def do_catch_up(self, params: NoParams, context: CommandContext) -> str:
        await context.in_progress(600.0, "catching up")
        archived, failed = await self._catch_up()
        return f"catch-up archived {archived} file(s); {failed} could not be read"

    async def _catch_up(self) -> tuple[int, int]:
        in_flight = self.config.sensors_in_flight
        try:
            return await self.catch_up.run(self.reads.daq, self._store(), in_flight)
        finally:
            failed, self._catch_up_failures = self._catch_up_failures, {}
            for image, failures in failed.items():
                await self._report_failures(image, failures)

    async def _catch_up_one(self, image: str, sensor: str, header_wait: float) -> bool:
        # An image long past waits for no header (one that turns up later completes its
        # files all the same); one just read out waits as its endReadout would (plan.py).
        failures = self._catch_up_failures.setdefault(image, {})
        return await self._archive_sensor(image, sensor, failures, header_wait=header_wait)

    async def _catch_up_loop(self) -> None:
        """Catch up every ``catchup_interval`` while ENABLED with a DAQ to list; a new
        configuration restarts the wait with its own interval."""
        await catch_up_periodically(
            lambda: self.config.catchup_interval, self._reconfigured,
            lambda: self.state is State.ENABLED and self.reads.daq is not None,
            lambda: self._catch_up_quietly("periodic"), self.log,
        )  # fmt: skip

    async def _catch_up_quietly(self, why: str) -> None:
        try:
            archived, failed = await self._catch_up()
        except ExpectedError as exc:
            self.log.warning("catch-up skipped", when=why, reason=str(exc))
        except CatalogError as exc:
            self._fatal(ERROR_CATALOG, str(exc))
        else:
            if archived or failed:
                self.log.info("caught up", when=why, archived=archived, failed=failed)
