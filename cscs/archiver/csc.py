"""The Archiver CSC: every image, whole and verified, into the archive and its catalog.

``Archiver:{index}`` follows ``Camera:{index}`` and ``HeaderService:{index}``. On
``endReadout`` it archives each listed sensor, a bounded number at once: the pixels read
from the DAQ (:mod:`~cscs.archiver.reader`: verified, retried), the header announced for
the image (:mod:`~cscs.archiver.headers`: waited for up to ``header_timeout``, MD5
checked), one FITS file per detector written and recorded
(:mod:`~cscs.archiver.store`), then ``imageArchived`` — or ``imageRetrievalFailed``,
leaving the sensor to catch-up.

Catch-up (:mod:`~cscs.archiver.plan`) archives what the DAQ holds and the catalog
lacks, oldest first: on ``catchUp``, on ``enable`` and every ``catchup_interval`` while
ENABLED. A file archived without its header is rewritten with it when the header turns
up. Nothing is archived twice: the catalog and the sensors in flight are checked before
any work starts.

FAULT, with an ``errorCode`` naming the cause: the DAQ unreachable for longer than
``daq_unreachable_fault_after`` (6001), the archive unwritable or full (6002), the
catalog failing (6003).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cscs.archiver.catchup import CatchUp
from cscs.archiver.headers import Header, HeaderSource
from cscs.archiver.interface import (
    ARCHIVER_STATUS,
    CATCH_UP,
    ERROR_ARCHIVE_UNWRITABLE,
    ERROR_CATALOG,
    ERROR_DAQ_UNREACHABLE,
    IMAGE_ARCHIVED,
    IMAGE_RETRIEVAL_FAILED,
    INTERFACE,
    ArchiverConfig,
    ArchiverStatus,
    ImageArchived,
    ImageRetrievalFailed,
)
from cscs.archiver.reader import DaqOpener, DaqReads, ReadFailedError, open_daq_client
from cscs.archiver.store import ArchiveStore, ArchiveUnwritableError, Provenance, check_names
from cscs.camera.events import (
    DAQ_AVAILABLE,
    END_READOUT,
    LATEST_IMAGE,
    DaqAvailable,
    EndReadout,
    LatestImage,
)
from cscs.camera.geometry import Camera, camera_for_index
from cscs.camera.headers import LARGE_FILE_OBJECT_AVAILABLE, LargeFileObjectAvailable
from cscs.catalog import CatalogError
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.follow import on
from cscs.core.remote import Parsed
from cscs.core.schema import NoParams
from cscs.core.states import State
from cscs.core.topics import CscAddress
from cscs.daq.reader import DaqReader, SensorPixels

__all__ = ["ArchiverConfig", "ArchiverCsc"]

_STATUS_INTERVAL = 5.0


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
        self.headers = HeaderSource(self.log)
        self.reads = DaqReads(self.log, self._daq_unreachable)
        self.catch_up = CatchUp(
            self.camera, self.headers, self._catch_up_one, self._complete_headers, self.log
        )
        self._open_daq = open_daq
        self._in_flight: set[tuple[str, str]] = set()
        self._slots = asyncio.Semaphore(self.config.sensors_in_flight)
        self._fatal_task: asyncio.Task[None] | None = None
        self._reconfigured = asyncio.Event()
        self._archived = 0
        self._bytes_window = 0

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [bind(CATCH_UP, self.do_catch_up)]

    # ---- life ------------------------------------------------------------------------

    async def configure(self, config: ArchiverConfig) -> None:
        """Open what the configuration names first, then switch to it: a refusal (an
        unwritable archive, a catalog or DAQ that cannot be opened) changes nothing."""
        try:
            store, stale = await asyncio.to_thread(
                ArchiveStore.open, config.root(self.state_dir / "archive"), self.camera,
                catalog_url=config.catalog_url, compression=config.compression,
                min_free_bytes=config.min_free_bytes,
            )  # fmt: skip
        except (OSError, CatalogError) as exc:
            raise ExpectedError(str(exc)) from None
        daq: DaqReader | None = None
        if config.daq_url and config.daq_url != self._daq_endpoint():
            try:
                daq = await self._open_daq(config.daq_url, config.daq_timeout, config.stall_timeout)
            except Exception as exc:
                store.close()
                raise ExpectedError(f"cannot read from the DAQ at {config.daq_url}: {exc}") from exc
        if stale:
            self.log.warning("removed files left half-written by a crash", count=stale)
        if self.store is not None:
            self.store.close()
        self.store = store
        if daq is not None:
            await self._switch_daq(daq)
        self.headers.template = config.header_url_template
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
        self._background.append(asyncio.create_task(self._report(), name=f"{self.address}-status"))
        self._background.append(
            asyncio.create_task(self._catch_up_loop(), name=f"{self.address}-catchup")
        )
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
        if self.store is not None:
            self.store.close()

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
            image = message.data.id
            self.jobs.spawn(self._complete_headers(image), f"header-{image}")

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
        self.jobs.spawn(self._archive_image(image, sensors), f"image-{image}")

    # ---- archiving -----------------------------------------------------------------------

    async def _archive_image(self, image: str, sensors: list[str]) -> None:
        done = await asyncio.gather(
            *(self._archive_sensor(image, s, header_wait=self.config.header_timeout)
              for s in sensors)
        )  # fmt: skip
        if any(done):
            description = f"archived {sum(done)} of {len(sensors)} files"
            await self.publish_event(
                LATEST_IMAGE, LatestImage(imageName=image, description=description)
            )

    async def _archive_sensor(self, image: str, sensor: str, *, header_wait: float) -> bool:
        """Archive one sensor of this camera's (names checked by the caller) unless it is
        archived or under way; True if archived now.

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
                    pixels = await self.reads.read(image, sensor)
                except ReadFailedError as exc:
                    await self.publish_event(
                        IMAGE_RETRIEVAL_FAILED,
                        ImageRetrievalFailed(imageName=image, sensor=sensor, description=str(exc)),
                    )
                    return False
                await self._store_file(store, pixels, header)
                return True
        except CatalogError as exc:
            self._fatal(ERROR_CATALOG, str(exc))
            return False
        except ArchiveUnwritableError as exc:
            self._fatal(ERROR_ARCHIVE_UNWRITABLE, str(exc))
            return False
        finally:
            self._in_flight.discard(key)

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
        self._archived += not replacing
        self._bytes_window += row.byte_size
        await self.publish_event(
            IMAGE_ARCHIVED,
            ImageArchived(
                imageName=row.image_name, sensor=row.sensor, url=Path(row.path).as_uri(),
                byteSize=row.byte_size, checkSum=row.md5, headerComplete=row.header_complete,
                statusCode=0 if header is not None else 1,
                description="archived" if header else "archived without its header",
            ),
        )  # fmt: skip

    # ---- catch-up and late headers ---------------------------------------------------

    async def do_catch_up(self, params: NoParams, context: CommandContext) -> str:
        await context.in_progress(600.0, "catching up")
        archived, failed = await self._catch_up()
        return f"catch-up archived {archived} file(s); {failed} could not be read"

    async def _catch_up(self) -> tuple[int, int]:
        in_flight = self.config.sensors_in_flight
        return await self.catch_up.run(self.reads.daq, self._store(), in_flight)

    async def _catch_up_one(self, image: str, sensor: str) -> bool:
        # Catch-up waits for no header: its images are past, and a header that turns up
        # later completes their files all the same.
        return await self._archive_sensor(image, sensor, header_wait=0.0)

    async def _catch_up_loop(self) -> None:
        """Catch up every ``catchup_interval`` while ENABLED; a new configuration restarts
        the wait with its own interval. Nothing ends the loop but the CSC's end."""
        while True:
            self._reconfigured.clear()
            interval = self.config.catchup_interval
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
            # that races with the wait ending, and this loop would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval or None):
                    await self._reconfigured.wait()
                continue  # reconfigured: wait again, with the new interval
            if self.state is State.ENABLED and self.reads.daq is not None:
                try:
                    await self._catch_up_quietly("periodic")
                except Exception as exc:  # a bug: said, and the next pass still comes
                    self.log.error("a catch-up pass failed unexpectedly", exc_info=exc)

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

    async def _complete_headers(self, image: str) -> None:
        """Rewrite files archived without their header, now that it has come."""
        store = self._store()
        try:
            rows = [r for r in await asyncio.to_thread(store.files_of, image) if not r.header_url]
            header = (
                await self.headers.get(image, wait=self.config.header_timeout) if rows else None
            )
            for row in rows if header is not None else []:
                key = (image, row.sensor)
                if key in self._in_flight:
                    continue
                self._in_flight.add(key)
                try:
                    pixels = await asyncio.to_thread(store.read_back, row)
                except OSError as exc:  # moved or damaged since: say so, do the others
                    self.log.error("cannot read back a file to add its header", path=row.path,
                                   error=str(exc))  # fmt: skip
                    continue
                else:
                    self.log.info("completing a file with its header", image=image,
                                  sensor=row.sensor)  # fmt: skip
                    await self._store_file(store, pixels, header, replacing=True)
                finally:
                    self._in_flight.discard(key)
        except CatalogError as exc:
            self._fatal(ERROR_CATALOG, str(exc))
        except ArchiveUnwritableError as exc:
            self._fatal(ERROR_ARCHIVE_UNWRITABLE, str(exc))

    # ---- status ------------------------------------------------------------------------

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(_STATUS_INTERVAL)
            rate, self._bytes_window = self._bytes_window / _STATUS_INTERVAL, 0
            free = 0
            if self.store is not None:
                with contextlib.suppress(OSError):
                    free = await asyncio.to_thread(self.store.free_bytes)
            await self.publish_telemetry(
                ARCHIVER_STATUS,
                ArchiverStatus(queueDepth=len(self._in_flight), bytesPerSecond=rate,
                               freeBytes=free, imagesArchived=self._archived),
            )  # fmt: skip
