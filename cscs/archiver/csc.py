"""The Archiver CSC: every image, whole and verified, into the archive and its catalog.

``Archiver:{index}`` follows ``Camera:{index}`` and ``HeaderService:{index}``. On
``endReadout`` it archives each listed sensor, a bounded number at once
(:mod:`~cscs.archiver.pipeline`): the pixels read from the DAQ
(:mod:`~cscs.archiver.reader`: verified, retried), the header announced for the image
(:mod:`~cscs.archiver.headers`: waited for up to ``header_timeout``, MD5 checked), one
FITS file per detector written and recorded (:mod:`~cscs.archiver.store`), then
``imageArchived`` — or ``imageRetrievalFailed``, leaving the sensor to catch-up.

Catch-up (:mod:`~cscs.archiver.catchup`, :mod:`~cscs.archiver.plan`) archives what the
DAQ holds and the catalog lacks, oldest first: on ``catchUp``, on ``enable`` and every
``catchup_interval`` while ENABLED. A file archived without its header is rewritten with
it when the header turns up (:mod:`~cscs.archiver.completion`). Nothing is archived
twice: the catalog and the sensors in flight are checked before any work starts.
``archiverStatus`` is counted and sent by :mod:`~cscs.archiver.status`.

This module is the CSC around those parts: its life (configuration opened by
:mod:`~cscs.archiver.resources`, then switched to), what it hears and where that goes,
and when catch-up runs.

FAULT, with an ``errorCode`` naming the cause: the DAQ unreachable for longer than
``daq_unreachable_fault_after`` (6001), the archive unwritable or full (6002), the
catalog failing (6003), the Dask scheduler lost for longer than ``executor_fault_after``
(6004).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cscs.archiver.catchup import CatchUp, catch_up_periodically
from cscs.archiver.executor import watch_scheduler
from cscs.archiver.headers import HeaderSource
from cscs.archiver.interface import (
    CATCH_UP,
    ERROR_CATALOG,
    ERROR_EXECUTOR_LOST,
    INTERFACE,
    ArchiverConfig,
)
from cscs.archiver.pipeline import MAX_IMAGES_IN_FLIGHT, SensorPipeline
from cscs.archiver.reader import DaqOpener, open_daq_client
from cscs.archiver.resources import open_configured
from cscs.archiver.store import check_names
from cscs.camera.events import DAQ_AVAILABLE, END_READOUT, DaqAvailable, EndReadout
from cscs.camera.geometry import Camera, camera_for_index
from cscs.camera.headers.announcement import LARGE_FILE_OBJECT_AVAILABLE, LargeFileObjectAvailable
from cscs.camera.headers.rebuild import REBUILD_HEADERS
from cscs.catalog import CatalogError
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.follow import on
from cscs.core.logs import Throttle
from cscs.core.remote import CommandTimeoutError, Parsed, Remote
from cscs.core.schema import NoParams
from cscs.core.states import State
from cscs.core.topics import CscAddress

__all__ = ["ArchiverConfig", "ArchiverCsc"]


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
        self.headers = HeaderSource(self.log)
        self.pipeline = SensorPipeline(
            self.config, headers=self.headers, publish_event=self.publish_event,
            publish_telemetry=self.publish_telemetry, fatal=self._fatal, jobs=self.jobs,
            log=self.log, version=self.version,
        )  # fmt: skip
        self.catch_up = CatchUp(
            self.camera, self.headers, self._catch_up_one, self.pipeline.completion.complete,
            self.log, header_timeout=lambda: self.config.header_timeout,
            ask_rebuild=self._ask_rebuild,
            rebuild_after=lambda: self.config.header_rebuild_after,
        )  # fmt: skip
        self._open_daq = open_daq
        self._catch_up_failures: dict[str, dict[str, str]] = {}
        self._too_many = Throttle()
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
            self.pipeline.daq_endpoint, self.pipeline.dask,
        )  # fmt: skip
        await self.pipeline.use(config, opened)
        self.headers.template = config.header_template(self.state_dir, self.address.index)
        self.headers.trust = config.header_trust(self.state_dir)
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
        self.keep_running(self.pipeline.status.run, "status")
        self.keep_running(self._catch_up_loop, "catch-up")
        self.keep_running(self._watch_scheduler, "scheduler")
        return self

    async def close(self) -> None:
        await self.unfollow()  # first: nothing heard from now on starts a job
        if self._fatal_task is not None:
            await asyncio.wait([self._fatal_task], timeout=10.0)
        await self.jobs.cancel("stopping archive jobs")
        await super().close()
        await self.pipeline.close()

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

    async def _follow_camera_daq(self, url: str) -> None:
        try:
            daq = await self._open_daq(url, self.config.daq_timeout, self.config.stall_timeout)
        except Exception as exc:
            self.log.error("cannot read from the DAQ the camera announced", url=url,
                           error=str(exc))  # fmt: skip
            return
        await self.pipeline.use_daq(daq)
        if self.state is State.ENABLED:
            # Enabled before the camera's DAQ was heard of (a restart past STANDBY can
            # win that race): the catch-up at enable found no DAQ, so it runs now.
            await self._catch_up_quietly("the camera's DAQ is known")

    async def _watch_scheduler(self) -> None:
        await watch_scheduler(
            lambda: self.pipeline.dask, lambda: self.config.executor_fault_after,
            lambda why: self.report_error(ERROR_EXECUTOR_LOST, why),
            lambda why: self._fatal(ERROR_EXECUTOR_LOST, why),
            self._catch_up_after_scheduler,
        )  # fmt: skip

    def _catch_up_after_scheduler(self) -> None:
        self.jobs.spawn(self._catch_up_quietly("the Dask scheduler is back"), "catch-up")

    # ---- what we hear ------------------------------------------------------------------

    def _on_daq(self, message: Parsed[DaqAvailable]) -> None:
        url = message.data.endpoint
        if url and not self.config.daq_url and url != self.pipeline.daq_endpoint:
            self.jobs.spawn(self._follow_camera_daq(url), "daq")

    def _on_header(self, message: Parsed[LargeFileObjectAvailable]) -> None:
        self.headers.announce(message.data)
        if self.state is State.ENABLED:  # complete files archived without it
            self.pipeline.completion.soon(message.data.id)

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
        if image in self.pipeline.images_in_flight:
            self.log.info("endReadout repeated for an image under way; ignored", image=image)
            return
        if len(self.pipeline.images_in_flight) >= MAX_IMAGES_IN_FLIGHT:
            self._too_many.warning(
                self.log, "too many images under way: this one is left to catch-up", image=image
            )
            return
        self.jobs.spawn(
            self.pipeline.archive_image(image, sensors), f"image-{image}",
            on_error=lambda exc: self.pipeline.left_to_catch_up(image, exc),
        )  # fmt: skip

    # ---- catch-up --------------------------------------------------------------------

    async def do_catch_up(self, params: NoParams, context: CommandContext) -> str:
        await context.in_progress(600.0, "catching up")
        archived, failed = await self._catch_up()
        return f"catch-up archived {archived} file(s); {failed} could not be read"

    async def _catch_up(self) -> tuple[int, int]:
        in_flight = self.config.sensors_in_flight
        try:
            store = self.pipeline.current_store()
            return await self.catch_up.run(self.pipeline.reads.daq, store, in_flight)
        finally:
            failed, self._catch_up_failures = self._catch_up_failures, {}
            for image, failures in failed.items():
                await self.pipeline.report_failures(image, failures)

    async def _catch_up_one(self, image: str, sensor: str, header_wait: float) -> bool:
        # An image long past waits for no header (one that turns up later completes its
        # files all the same); one just read out waits as its endReadout would (plan.py).
        failures = self._catch_up_failures.setdefault(image, {})
        return await self.pipeline.archive_sensor(image, sensor, failures, header_wait=header_wait)

    async def _catch_up_loop(self) -> None:
        """Catch up every ``catchup_interval`` while ENABLED with a DAQ to list; a new
        configuration restarts the wait with its own interval."""
        await catch_up_periodically(
            lambda: self.config.catchup_interval, self._reconfigured,
            lambda: self.state is State.ENABLED and self.pipeline.reads.daq is not None,
            lambda: self._catch_up_quietly("periodic"), self.log,
        )  # fmt: skip

    def _ask_rebuild(self, image: str) -> None:
        self.jobs.spawn(self._asking_rebuild(image), f"rebuild-{image}")

    async def _asking_rebuild(self, image: str) -> None:
        """Ask ``HeaderService:{index}`` (over the bus) to rebuild ``image``'s header
        from the EFD; the files are completed when it is announced."""
        try:
            async with Remote(self.bus, self.header_address) as remote:
                ack = await remote.command(
                    REBUILD_HEADERS.name, {"firstImage": image}, timeout=30.0, check=False
                )
        except CommandTimeoutError as exc:
            self.log.warning("could not ask for a header rebuilt from the EFD", image=image,
                             error=str(exc))  # fmt: skip
            return
        self.log.info("asked for a header rebuilt from the EFD", image=image,
                      ack=ack.code.name, result=ack.result)  # fmt: skip

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
