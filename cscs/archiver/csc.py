"""The Archiver CSC: every image, whole and verified, into the archive and its catalog.

``Archiver:{index}`` follows ``Camera:{index}`` and ``HeaderService:{index}``. On
``endReadout`` it archives each listed sensor (a bounded number at once, whatever the
camera): read the pixels from the DAQ (every frame's checksum verified; retried with
back-off when the failure may pass), take the header announced by
``largeFileObjectAvailable`` (its MD5 verified; waited for up to ``header_timeout``),
write one FITS file per detector (``cscs/core/fits.py``: temporary name, ``fsync``,
rename — never a partial file under a final name), record it in the catalog, and
publish ``imageArchived`` — or ``imageRetrievalFailed``, leaving the sensor to catch-up.

Catch-up compares the DAQ's buffer with the catalog and archives what is missing,
oldest first: on ``catchUp``, on ``enable`` and every ``catchup_interval`` while
ENABLED. A file archived without its header is rewritten with it when the header turns
up. Nothing is archived twice: the catalog and the set of sensors in flight are checked
before any work starts.

FAULT, with an ``errorCode`` naming the cause: the DAQ unreachable for longer than
``daq_unreachable_fault_after`` (6001), the archive unwritable or full (6002), the
catalog failing (6003).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import shutil
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

import yaml
from pydantic import Field

from cscs import __version__
from cscs.archiver.catalog import ArchivedFile, Catalog, CatalogError, sqlite_url
from cscs.core import generic as g
from cscs.core.backoff import Backoff
from cscs.core.camera_events import LATEST_IMAGE, EndReadout, LatestImage, parse_event
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.config import ConfigSchema
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.fits import Card, write_raw_fits
from cscs.core.geometry import SEGMENT_BYTES, SEGMENTS, Camera, camera_for_index, detector_keywords
from cscs.core.remote import Received
from cscs.core.schema import CommandSpec, EventSpec, NoParams, Payload, TelemetrySpec
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress
from cscs.daq.client import DaqClient, SensorPixels
from cscs.daq.errors import DaqError, DaqUnavailableError

__all__ = ["ArchiverConfig", "ArchiverCsc"]

ERROR_DAQ_UNREACHABLE = 6001
ERROR_ARCHIVE_UNWRITABLE = 6002
ERROR_CATALOG = 6003
_FILE_BYTES = len(SEGMENTS) * (SEGMENT_BYTES + 2880 * 2) + 2880 * 20  # upper bound
_REMEMBERED_HEADERS = 10_000


# ---- interface ---------------------------------------------------------------------------


class ImageArchived(Payload):
    imageName: str
    sensor: str
    url: str
    byteSize: int
    checkSum: str
    """MD5 of the file, hex"""
    headerComplete: bool
    statusCode: int
    description: str


class ImageRetrievalFailed(Payload):
    imageName: str
    sensor: str
    description: str


class ArchiverStatus(Payload):
    queueDepth: int
    """sensors waiting or being archived"""
    bytesPerSecond: float
    """archived over the last interval"""
    freeBytes: int
    imagesArchived: int
    """files archived since start"""


CATCH_UP = CommandSpec(
    "catchUp", NoParams, "Archive whatever the DAQ holds that the catalog lacks, oldest first."
)
IMAGE_ARCHIVED = EventSpec("imageArchived", ImageArchived, "A file is in the archive.")
IMAGE_RETRIEVAL_FAILED = EventSpec(
    "imageRetrievalFailed", ImageRetrievalFailed, "A sensor could not be archived (yet)."
)
ARCHIVER_STATUS = TelemetrySpec("archiverStatus", ArchiverStatus, "Every 5 s.")


class ArchiverConfig(ConfigSchema):
    archive_root: str = ""
    """Empty: `$CSCS_STATE_DIR/archive`."""
    catalog_url: str = ""
    """SQLAlchemy URL; empty: SQLite at `{archive_root}/catalog.sqlite`."""
    daq_url: str = ""
    """ZeroMQ endpoint of the DAQ; empty: follow `Camera:{index}` `daqAvailable`."""
    header_timeout: float = Field(default=30.0, ge=0.0)
    sensors_in_flight: int = Field(default=4, ge=1, le=64)
    read_attempts: int = Field(default=3, ge=1)
    daq_timeout: float = Field(default=10.0, gt=0.0)
    stall_timeout: float = Field(default=5.0, gt=0.0)
    daq_unreachable_fault_after: float = Field(default=60.0, gt=0.0)
    catchup_interval: float = Field(default=60.0, ge=0.0)
    """Seconds between catch-up passes while ENABLED; 0 for none."""
    header_url_template: str = ""
    """Where headers not heard announced (during an outage) can be fetched, e.g.
    `file:///data/headers/{day_obs}/{image}.yaml`; empty: only announced headers."""
    compression: Literal["", "RICE_1"] = ""
    min_free_bytes: int = Field(default=2**30, ge=0)
    """Refuse to write (FAULT) when the archive would have less free space than this."""

    def root(self, default: Path) -> Path:
        return Path(self.archive_root).expanduser() if self.archive_root else default


@dataclass(frozen=True)
class Header:
    url: str
    md5: str
    primary: list[Card]
    detectors: dict[str, list[Card]]
    segments: dict[str, list[Card]]
    missing: str


class ArchiveUnwritableError(Exception):
    """The archive cannot take the file: no space, or the file system refused."""


# ---- the CSC -----------------------------------------------------------------------------


class ArchiverCsc(BaseCsc):
    interface = g.GENERIC.extended(
        "Archiver",
        "Archives every image's pixels from the DAQ with its header as FITS, one file per "
        "detector, recorded in the archive catalog (index = camera). File layout as ICD §6. "
        "`imageArchived.statusCode` is 0, or 1 when the file was archived without its "
        "header (completed later). `catchUp` is an addition.",
        commands=(CATCH_UP,),
        events=(IMAGE_ARCHIVED, IMAGE_RETRIEVAL_FAILED, LATEST_IMAGE),
        telemetry=(ARCHIVER_STATUS,),
    )
    config_schema = ArchiverConfig
    default_config_dir: ClassVar[Path | None] = Path(__file__).parent / "config"

    def __init__(self, index: int = 1, **kwargs: Any) -> None:
        self.camera: Camera = camera_for_index(index)
        super().__init__(index, **kwargs)
        self.camera_address = CscAddress("Camera", index, self.address.prefix)
        self.header_address = CscAddress("HeaderService", index, self.address.prefix)
        self.archiver_config = ArchiverConfig()
        self.archive_root = self.state_dir / "archive"
        self.catalog: Catalog | None = None
        self.daq: DaqClient | None = None
        self.daq_url = ""
        self._headers: OrderedDict[str, dict[str, Any]] = OrderedDict()  # announcements
        self._header_arrived: dict[str, asyncio.Event] = {}
        self._parsed: OrderedDict[str, Header] = OrderedDict()  # fetched and verified
        self._gave_up: OrderedDict[str, bool] = OrderedDict()  # waited in vain
        self._in_flight: set[tuple[str, str]] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self.archiver_config.sensors_in_flight)
        self._daq_down_since: float | None = None
        self._fatal_task: asyncio.Task[None] | None = None
        self._reconfigured = asyncio.Event()
        self._archived = 0
        self._bytes_window = 0

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [bind(CATCH_UP, self.do_catch_up)]

    # ---- life ------------------------------------------------------------------------

    async def configure(self, config: ConfigSchema) -> None:
        assert isinstance(config, ArchiverConfig)
        root = config.root(self.state_dir / "archive")
        url = config.catalog_url or sqlite_url(root / "catalog.sqlite")
        try:
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
            stale = await asyncio.to_thread(_remove_partial_files, root)
            if stale:
                self.log.warning("removed files left half-written by a crash", count=stale)
            catalog = await asyncio.to_thread(Catalog, url)
        except (OSError, CatalogError) as exc:
            raise ExpectedError(str(exc)) from None
        if self.catalog is not None:
            self.catalog.close()
        self.catalog, self.archive_root = catalog, root
        self.archiver_config = config
        self.config = config
        self._slots = asyncio.Semaphore(config.sensors_in_flight)
        self._reconfigured.set()
        await self.unfollow()
        await self.follow(self.camera_address.event("endReadout"), self._on_end_readout)
        await self.follow(self.camera_address.event("daqAvailable"), self._on_daq_available)
        await self.follow(self.header_address.event("largeFileObjectAvailable"), self._on_header)
        if config.daq_url:
            await self._use_daq(config.daq_url)

    async def __aenter__(self) -> ArchiverCsc:
        await super().__aenter__()
        self._background.append(asyncio.create_task(self._report(), name=f"{self.address}-status"))
        self._background.append(
            asyncio.create_task(self._catch_up_loop(), name=f"{self.address}-catchup")
        )
        return self

    async def close(self) -> None:
        if self._fatal_task is not None:
            await asyncio.wait([self._fatal_task], timeout=10.0)
        await self._cancel_jobs()
        await super().close()
        if self.daq is not None:
            await self.daq.close()
            self.daq = None
        if self.catalog is not None:
            self.catalog.close()

    async def end_enable(self, params: NoParams) -> None:
        self._spawn_job(self._catch_up_quietly("at enable"), "catch-up at enable")

    async def state_changed(self, old: State, new: State) -> None:
        if old is State.ENABLED:
            await self._cancel_jobs()

    async def _cancel_jobs(self) -> None:
        current = asyncio.current_task()
        jobs = [job for job in self._jobs if job is not current]
        await cancel_and_wait(jobs, self.log, "stopping archive jobs")

    def _fatal(self, code: int, report: str) -> None:
        """Go to FAULT from inside a job: in a task of its own, because going to FAULT
        cancels and waits for every job, the one reporting included."""
        if self._fatal_task is None or self._fatal_task.done():
            self._fatal_task = asyncio.create_task(
                self.fault(code, report), name=f"{self.address}-fault"
            )

    def _spawn_job(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=f"{self.address}-{name}")
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _use_daq(self, url: str) -> None:
        if url == self.daq_url and self.daq is not None:
            return
        if self.daq is not None:
            await self.daq.close()
        config = self.archiver_config
        self.daq = DaqClient(url, timeout=config.daq_timeout, stall_timeout=config.stall_timeout)
        await self.daq.__aenter__()
        self.daq_url = url
        self.log.info("reading pixels from the DAQ", url=url)

    # ---- what we hear ------------------------------------------------------------------

    def _on_daq_available(self, message: Received) -> None:
        url = str(message.data.get("url", "")).split(",")[0]
        if url and not self.archiver_config.daq_url:
            self._spawn_job(self._use_daq(url), "daq")

    def _on_header(self, message: Received) -> None:
        image = message.data.get("id")
        if not isinstance(image, str):
            return
        _remember(self._headers, image, message.data)
        self._gave_up.pop(image, None)
        self._parsed.pop(image, None)
        arrived = self._header_arrived.get(image)
        if arrived is not None:
            arrived.set()
        if self.state is State.ENABLED:  # complete files archived without it
            self._spawn_job(self._complete_headers(image), f"header-{image}")

    def _on_end_readout(self, message: Received) -> None:
        if self.state is not State.ENABLED or message.retained:
            return
        try:
            event = parse_event(EndReadout, message.data)
        except ValueError as exc:
            self.log.warning("ignored a malformed endReadout", error=str(exc))
            return
        sensors = [s for s in event.sensors.split(",") if s]
        self._spawn_job(self._archive_image(event.imageName, sensors), f"image-{event.imageName}")

    # ---- archiving -----------------------------------------------------------------------

    async def _archive_image(self, image: str, sensors: list[str]) -> None:
        done = await asyncio.gather(
            *(self._archive_sensor(image, s, wait_for_header=True) for s in sensors)
        )
        if any(done):
            await self.publish_event(
                LATEST_IMAGE,
                LatestImage(
                    imageName=image, description=f"archived {sum(done)} of {len(sensors)} files"
                ),
            )

    async def _archive_sensor(self, image: str, sensor: str, *, wait_for_header: bool) -> bool:
        """Archive one sensor unless it is done or under way; True if archived now.

        The header is awaited before a slot is taken: while the header service is down,
        each image waits out ``header_timeout`` on its own, holding no pixels, and the
        images behind it are not held up."""
        key = (image, sensor)
        if key in self._in_flight:
            return False
        self._in_flight.add(key)
        try:
            catalog = self._catalog()
            if await asyncio.to_thread(catalog.lookup, image, sensor) is not None:
                return False  # archived already: a repeated endReadout, or catch-up
            header = await self._header(image, wait=wait_for_header)
            async with self._slots:
                pixels = await self._read(image, sensor)
                if pixels is None:
                    return False
                await self._store(image, sensor, pixels, header)
                return True
        except CatalogError as exc:
            self._fatal(ERROR_CATALOG, str(exc))
            return False
        except ArchiveUnwritableError as exc:
            self._fatal(ERROR_ARCHIVE_UNWRITABLE, str(exc))
            return False
        finally:
            self._in_flight.discard(key)

    def _catalog(self) -> Catalog:
        if self.catalog is None:
            raise CatalogError("the archiver has no catalog: start it first")
        return self.catalog

    async def _read(self, image: str, sensor: str) -> SensorPixels | None:
        """The pixels, or None after publishing imageRetrievalFailed (catch-up retries)."""
        config = self.archiver_config
        backoff = Backoff(initial=0.2, maximum=5.0)
        failure = ""
        for attempt in range(1, config.read_attempts + 1):
            if self.daq is None:
                failure = "no DAQ known yet (no daqAvailable from the camera, no daq_url)"
            else:
                try:
                    pixels = await self.daq.read_sensor(image, sensor)
                except DaqUnavailableError as exc:
                    failure = str(exc)
                    self._daq_unreachable(failure)
                except DaqError as exc:
                    self._daq_down_since = None
                    failure = str(exc)
                    if not exc.retriable:
                        break
                else:
                    self._daq_down_since = None
                    return pixels
            self.log.warning("DAQ read failed", image=image, sensor=sensor, attempt=attempt,
                             error=failure)  # fmt: skip
            if attempt < config.read_attempts:
                await asyncio.sleep(backoff.next_delay())
        await self.publish_event(
            IMAGE_RETRIEVAL_FAILED,
            ImageRetrievalFailed(imageName=image, sensor=sensor, description=failure),
        )
        return None

    def _daq_unreachable(self, why: str) -> None:
        now = time.monotonic()
        if self._daq_down_since is None:
            self._daq_down_since = now
        elif now - self._daq_down_since > self.archiver_config.daq_unreachable_fault_after:
            self._fatal(ERROR_DAQ_UNREACHABLE, f"the DAQ has been unreachable for "
                        f"{now - self._daq_down_since:.1f} s: {why}")  # fmt: skip

    async def _header(self, image: str, *, wait: bool = True) -> Header | None:
        """The image's header document, verified, or None (archived without it).

        ``wait``: for an announcement not heard yet, up to ``header_timeout``. Catch-up
        does not wait: its images are past, and a header that turns up later completes
        their files all the same."""
        if image in self._parsed:
            return self._parsed[image]
        announcement = self._headers.get(image)
        if announcement is None:
            header = await self._unannounced_header(image)
            if header is not None:
                return header
        if announcement is None and (image in self._gave_up or not wait):
            return None  # the image's other sensors waited already, or catch-up
        if announcement is None:
            arrived = self._header_arrived.setdefault(image, asyncio.Event())
            try:
                async with asyncio.timeout(self.archiver_config.header_timeout):
                    await arrived.wait()
            except TimeoutError:
                self.log.warning("no header in time; archiving without it", image=image)
                _remember(self._gave_up, image, True)
                return None
            finally:
                self._header_arrived.pop(image, None)
            announcement = self._headers[image]
        try:
            header = await asyncio.to_thread(_fetch_header, announcement)
        except (OSError, ValueError) as exc:
            self.log.error("header unusable; archiving without it", image=image, error=str(exc))
            return None
        _remember(self._parsed, image, header)
        return header

    async def _unannounced_header(self, image: str) -> Header | None:
        """A header whose announcement this archiver never heard (it was down), fetched
        from where the header service keeps it (``header_url_template``)."""
        template = self.archiver_config.header_url_template
        if not template:
            return None
        url = template.format(day_obs=image.split("_")[2], image=image)
        try:
            header = await asyncio.to_thread(_fetch_header, {"url": url, "id": image})
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self.log.warning("header at the template URL unusable", image=image, error=str(exc))
            return None
        self.log.info("found a header that was announced before this archiver listened",
                      image=image, url=url)  # fmt: skip
        _remember(self._parsed, image, header)
        return header

    async def _store(
        self,
        image: str,
        sensor: str,
        pixels: SensorPixels,
        header: Header | None,
        *,
        replacing: bool = False,
    ) -> None:
        path = self._path(image, sensor)
        written = await asyncio.to_thread(self._write, path, image, sensor, pixels, header)
        day_obs = image.split("_")[2]
        row = ArchivedFile(
            image_name=image, sensor=sensor, instrument=self.camera.instrument, day_obs=day_obs,
            path=str(path), byte_size=written[0], md5=written[1],
            header_complete=header is not None and not header.missing,
            missing_keywords=header.missing if header else "header not received",
            daq_image=f"{self.daq_url} {image}", header_url=header.url if header else "",
            header_md5=header.md5 if header else "", software_version=__version__,
            exposure_start_tai=_exposure_start(header), archived_tai=current_tai(),
        )  # fmt: skip
        await asyncio.to_thread(self._catalog().record, row)
        self._archived += not replacing
        self._bytes_window += written[0]
        await self.publish_event(
            IMAGE_ARCHIVED,
            ImageArchived(
                imageName=image, sensor=sensor, url=path.resolve().as_uri(),
                byteSize=written[0], checkSum=written[1], headerComplete=row.header_complete,
                statusCode=0 if header is not None else 1,
                description="archived" if header else "archived without its header",
            ),
        )  # fmt: skip

    def _path(self, image: str, sensor: str) -> Path:
        raft, slot = sensor.split("_")
        day_obs = image.split("_")[2]
        return (
            self.archive_root
            / self.camera.instrument
            / day_obs
            / image
            / (f"{image}_{raft}_{slot}.fits")
        )

    def _write(
        self, path: Path, image: str, sensor: str, pixels: SensorPixels, header: Header | None
    ) -> tuple[int, str]:
        """Write one file (worker thread); (size, MD5)."""
        free = shutil.disk_usage(self.archive_root).free
        if free - _FILE_BYTES < self.archiver_config.min_free_bytes:
            raise ArchiveUnwritableError(
                f"archive {self.archive_root} is full: {free / 1e9:.2f} GB free, "
                f"min_free_bytes is {self.archiver_config.min_free_bytes / 1e9:.2f} GB; "
                f"{image} {sensor} not written"
            )
        primary = _primary_cards(image, sensor, self.camera, header)
        extensions = [
            (header.segments.get(s.name) if header else None)
            or [(k, v, "") for k, v in s.keywords().items()]
            for s in SEGMENTS
        ]
        try:
            written = write_raw_fits(
                path,
                primary,
                list(zip(extensions, pixels.segments, strict=True)),
                compression=self.archiver_config.compression,
            )
        except OSError as exc:
            why = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
            raise ArchiveUnwritableError(
                f"cannot write {path}: {why} (no partial file left)"
            ) from exc
        return written.byte_size, written.md5

    # ---- catch-up and late headers ---------------------------------------------------

    async def do_catch_up(self, params: NoParams, context: CommandContext) -> str:
        await context.in_progress(600.0, "catching up")
        archived, failed = await self._catch_up()
        return f"catch-up archived {archived} file(s); {failed} could not be read"

    async def _catch_up_loop(self) -> None:
        """Catch up every ``catchup_interval`` while ENABLED; a new configuration restarts
        the wait with its own interval."""
        while True:
            self._reconfigured.clear()
            interval = self.archiver_config.catchup_interval
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
            # that races with the wait ending, and this loop would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval or None):
                    await self._reconfigured.wait()
                continue  # reconfigured: wait again, with the new interval
            if self.state is State.ENABLED and self.daq is not None:
                await self._catch_up_quietly("periodic")

    async def _catch_up_quietly(self, why: str) -> None:
        try:
            archived, failed = await self._catch_up()
        except ExpectedError as exc:
            self.log.warning("catch-up skipped", when=why, reason=str(exc))
        else:
            if archived or failed:
                self.log.info("caught up", when=why, archived=archived, failed=failed)

    async def _catch_up(self) -> tuple[int, int]:
        """Archive what the DAQ holds and the catalog lacks, oldest first."""
        if self.daq is None:
            raise ExpectedError("no DAQ known yet: is the camera running? (or set daq_url)")
        try:
            images = await self.daq.list_images()
        except DaqError as exc:
            raise ExpectedError(f"cannot list the DAQ's images: {exc}") from None
        catalog = self._catalog()
        todo: list[tuple[str, str]] = []
        for info in images:
            if not info.complete:
                continue
            done = {f.sensor for f in await asyncio.to_thread(catalog.files_of, info.name)}
            skip = done | set(info.missing_sensors)
            missing = [s for s in info.sensors if s not in skip]
            if missing:
                self.log.info("catching up", image=info.name, sensors=",".join(missing))
            todo += [(info.name, sensor) for sensor in missing]
        results = await self._archive_in_order(todo)
        archived, failed = sum(results), len(todo) - sum(results)
        for row in await asyncio.to_thread(catalog.without_header):
            if row.image_name in self._headers:
                await self._complete_headers(row.image_name)
        return archived, failed

    async def _archive_in_order(self, todo: list[tuple[str, str]]) -> list[bool]:
        """Archive each (image, sensor) of ``todo``, started in order (oldest first: the
        DAQ evicts those first) with ``sensors_in_flight`` under way at once, so that
        the DAQ, the cores and the disk stay busy even for a one-sensor camera."""
        starts = asyncio.Semaphore(self.archiver_config.sensors_in_flight)

        async def archive(image: str, sensor: str) -> bool:
            try:
                return await self._archive_sensor(image, sensor, wait_for_header=False)
            finally:
                starts.release()

        tasks: list[asyncio.Task[bool]] = []
        try:
            for image, sensor in todo:
                await starts.acquire()
                tasks.append(asyncio.create_task(archive(image, sensor)))
            return list(await asyncio.gather(*tasks))
        finally:
            await cancel_and_wait([t for t in tasks if not t.done()], self.log, "catch-up")

    async def _complete_headers(self, image: str) -> None:
        """Rewrite files archived without their header, now that it has come."""
        catalog = self._catalog()
        rows = [r for r in await asyncio.to_thread(catalog.files_of, image) if not r.header_url]
        if not rows:
            return
        header = await self._header(image)
        if header is None:
            return
        for row in rows:
            key = (image, row.sensor)
            if key in self._in_flight:
                continue
            self._in_flight.add(key)
            try:
                pixels = await asyncio.to_thread(_read_back, Path(row.path), image, row.sensor)
                self.log.info("completing a file with its header", image=image, sensor=row.sensor)
                await self._store(image, row.sensor, pixels, header, replacing=True)
            except CatalogError as exc:
                self._fatal(ERROR_CATALOG, str(exc))
                return
            except ArchiveUnwritableError as exc:
                self._fatal(ERROR_ARCHIVE_UNWRITABLE, str(exc))
                return
            finally:
                self._in_flight.discard(key)

    # ---- status ------------------------------------------------------------------------

    async def _report(self) -> None:
        interval = 5.0
        while True:
            await asyncio.sleep(interval)
            rate, self._bytes_window = self._bytes_window / interval, 0
            try:
                free = (await asyncio.to_thread(shutil.disk_usage, self.archive_root)).free
            except OSError:
                free = 0
            await self.publish_telemetry(
                ARCHIVER_STATUS,
                ArchiverStatus(queueDepth=len(self._in_flight), bytesPerSecond=rate,
                               freeBytes=free, imagesArchived=self._archived),
            )  # fmt: skip


# ---- helpers (no CSC state) ----------------------------------------------------------------


def _remove_partial_files(root: Path) -> int:
    """Delete temporaries a crash left behind (never under a final name); how many."""
    count = 0
    for path in root.rglob(".*.partial"):
        path.unlink(missing_ok=True)
        count += 1
    return count


def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
    """Keep ``value``, forgetting the oldest entries beyond a night's worth."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _REMEMBERED_HEADERS:
        cache.popitem(last=False)


def _cards(entries: list[dict[str, Any]]) -> list[Card]:
    return [(e["keyword"], e.get("value"), str(e.get("comment", ""))[:47]) for e in entries]


def _fetch_header(announcement: dict[str, Any]) -> Header:
    """Fetch and verify a header document (worker thread); ValueError if it is wrong."""
    url = str(announcement["url"])
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise ValueError(f"header URL {url}: only file:// is supported")
    data = Path(parsed.path).read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    announced = "checkSum" in announcement  # or found unannounced, by its URL
    if announced and (md5 != announcement["checkSum"] or len(data) != announcement["byteSize"]):
        raise ValueError(f"header {url} does not match its announcement (MD5 {md5})")
    document = yaml.safe_load(data)
    if document.get("imageName") != announcement.get("id"):
        raise ValueError(
            f"header {url} is for {document.get('imageName')}, not {announcement.get('id')}"
        )
    return Header(
        url=url,
        md5=md5,
        primary=_cards(document["primary"]),
        detectors={name: _cards(cards) for name, cards in document["detectors"].items()},
        segments={name: _cards(cards) for name, cards in document["segments"].items()},
        missing=",".join(m["keyword"] for m in document.get("missing", [])),
    )


def _primary_cards(image: str, sensor: str, camera: Camera, header: Header | None) -> list[Card]:
    if header is None:
        detector = camera.detector(sensor)
        return [
            ("OBSID", image, "image name"),
            ("INSTRUME", camera.instrument, "instrument"),
            *[(k, v, "") for k, v in detector_keywords(detector).items()],
            ("HDRSTAT", "MISSING", "header service document not received"),
        ]
    return header.primary + header.detectors.get(sensor, [])


def _exposure_start(header: Header | None) -> float:
    if header is None:
        return current_tai()
    for keyword, value, _ in header.primary:
        if keyword == "MJD-OBS" and isinstance(value, float):
            return (value - 40587.0) * 86400.0  # MJD (TAI) to Unix-epoch TAI seconds
    return current_tai()


def _read_back(path: Path, image: str, sensor: str) -> SensorPixels:
    """The pixels of a file we archived (to rewrite it with its header)."""
    from astropy.io import fits

    with fits.open(path, checksum=True) as hdus:
        segments = tuple(hdus[s.name].data.astype("=i4") for s in SEGMENTS)
    return SensorPixels(image, sensor, segments, ())
