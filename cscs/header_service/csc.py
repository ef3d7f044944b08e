"""The Header Service CSC: for every exposure, the header the archiver needs.

``HeaderService:{index}`` follows ``Camera:{index}``. On ``startIntegration`` it opens a
collection for that image and takes the ``start`` values; it feeds the exposure's
monitors from every source message; on ``endOfImageTelemetry`` (and any other camera
event the map names) it takes the rest. When every moment has come it derives the
computed keywords, writes the header document (atomically) and publishes
``largeFileObjectAvailable`` with its URL, size and MD5 (ICD §6).

Exposures are independent: any number may overlap, up to ``max_open_exposures`` (a
forged flood of ``startIntegration`` must not take the memory; the excess is dropped
with a warning). Each waits for its end no longer than its ``startIntegration.timeout``
(at most an hour), and what the broker had delivered by then is read before that is
judged (a service paused past the deadline reads its queued end first); then it is
abandoned, logged, and nothing of it is left running. If
a header cannot be written or announced, the CSC goes to FAULT with an ``errorCode``
saying which image and why (the observatory's own header service did not, and headers
went missing silently).

Names come off the bus: the camera's events are checked where they are parsed, an
image or sensor not of this service's camera is ignored, and the document's path is
built with :func:`~cscs.camera.files.path_under`, so it never leaves ``output_dir``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from cscs.camera import files
from cscs.camera.events import (
    END_OF_IMAGE_TELEMETRY,
    END_READOUT,
    FOCAL_PLANE_SUMMARY_INFO,
    LATEST_IMAGE,
    START_INTEGRATION,
    START_READOUT,
    CcdHardware,
    EndOfImageTelemetry,
    EndReadout,
    FocalPlaneSummaryInfo,
    LatestImage,
    StartIntegration,
    StartReadout,
)
from cscs.camera.geometry import Camera, camera_for_index
from cscs.camera.headers.announcement import (
    LARGE_FILE_OBJECT_AVAILABLE,
    MIME_TYPE,
    LargeFileObjectAvailable,
)
from cscs.camera.headers.paths import default_header_dir
from cscs.camera.headers.rebuild import REBUILD_HEADERS, RebuildHeaders, image_range
from cscs.camera.naming import ImageName
from cscs.camera.observatory import pointing
from cscs.core import generic as g
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.follow import on
from cscs.core.logs import Throttle
from cscs.core.remote import Parsed, Received
from cscs.core.schema import NoParams
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress
from cscs.efd.store import EfdStore, EfdStoreError
from cscs.header_service.collect import (
    CameraMoment,
    Exposure,
    KeywordRule,
    SourceCache,
    SourceKey,
)
from cscs.header_service.configuration import HeaderServiceConfig
from cscs.header_service.document import RenderedHeader
from cscs.header_service.making import make_header
from cscs.header_service.paths import header_path
from cscs.header_service.rebuild import EfdHeaders, Outcome
from cscs.header_service.rebuilder import Rebuilder, RebuildSettings, summary

__all__ = ["HeaderServiceConfig", "HeaderServiceCsc"]

ERROR_CANNOT_WRITE = 5001
ERROR_CANNOT_PUBLISH = 5002
ERROR_INTERNAL = 5003
_LONGEST_WAIT = 3600.0  # s: a startIntegration.timeout beyond this (or infinite) is cut
_SETTLE_LIMIT = 5.0  # s at most to take what was delivered before judging an end missing
_DROP_WARNING_INTERVAL = 60.0  # s between warnings about exposures dropped


class HeaderWriteError(Exception):
    """The header document could not be written (disk full, permissions, …)."""


class HeaderServiceCsc(BaseCsc[HeaderServiceConfig]):
    interface = g.GENERIC.extended(
        "HeaderService",
        "Collects each exposure's header metadata from the bus and publishes the header "
        "document for the archiver (index = camera). The document format is declared in "
        "`cscs/camera/headers/`, the keyword map in `docs/header-service.md`; "
        "`largeFileObjectAvailable.missingKeywords` and `.rebuilt`, and the command "
        "`rebuildHeaders` (headers rebuilt from the EFD), are additions to ICD §6.",
        commands=(REBUILD_HEADERS,),
        events=(LARGE_FILE_OBJECT_AVAILABLE, LATEST_IMAGE),
    )
    config_schema = HeaderServiceConfig
    default_config_dir: ClassVar[Path | None] = Path(__file__).parent / "config"

    def __init__(self, index: int = 1, **kwargs: Any) -> None:
        self.camera: Camera = camera_for_index(index)
        super().__init__(index, **kwargs)
        self.camera_address = CscAddress("Camera", index, self.address.prefix)
        self._default_output_dir = default_header_dir(self.state_dir, index)
        self.output_dir = self._default_output_dir
        self.cache = SourceCache()
        self.exposures: dict[str, Exposure] = {}
        self._finished: dict[str, asyncio.Event] = {}
        self._exposure_tasks: dict[str, asyncio.Task[None]] = {}
        self._detectors = frozenset(d.name for d in self.camera.detectors)
        self.exposures_dropped = 0  # startIntegration dropped: too many open
        self._drops = Throttle(_DROP_WARNING_INTERVAL)
        self.hardware: dict[str, CcdHardware] | None = None  # by detector, when announced
        self.rules: list[KeywordRule] = []  # the keyword map's rules for this camera
        self.rebuilder = Rebuilder(
            self.settings.efd, jobs=self.jobs, log=self.log, announce=self._announce_rebuilt,
            busy=lambda image: image in self.exposures,
        )  # fmt: skip

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [bind(REBUILD_HEADERS, self.do_rebuild_headers)]

    # ---- configuration and subscriptions ----------------------------------------------

    async def configure(self, config: HeaderServiceConfig) -> None:
        try:
            rules = [r for r in config.keywords if r.applies_to(self.camera.instrument)]
            keys = {rule.key(self.address.index) for rule in rules}
        except ValueError as exc:
            raise ExpectedError(f"keyword map: {exc}") from None
        self.rules = rules
        self.output_dir = config.output_path() or self._default_output_dir
        self.rebuilder.settings = RebuildSettings(
            self._efd_headers(rules, self.output_dir), config.rebuild_delay, config.rebuild_lookback
        )
        await asyncio.to_thread(pointing, 0.0, -30.0, current_tai())  # load astropy now
        await self._listen(keys)

    async def _listen(self, keys: set[SourceKey]) -> None:
        await self.unfollow()
        prefix = self.address.prefix
        for topic in sorted({f"{prefix}/{k.name}/{k.index}/{k.kind}/{k.topic}" for k in keys}):
            await self.follow_topic(topic, self._source)
        await self.follow_events(  # in the camera's order: an image starts before it ends
            self.camera_address,
            on(START_INTEGRATION, self._on_start_integration),
            on(START_READOUT, self._on_start_readout),
            on(END_READOUT, self._on_end_readout),
            on(END_OF_IMAGE_TELEMETRY, self._on_end_of_image_telemetry),
            on(FOCAL_PLANE_SUMMARY_INFO, self._on_focal_plane),
        )

    async def close(self) -> None:
        await self._abandon_all("closing")
        await super().close()
        await self.rebuilder.close()

    async def end_enable(self, params: NoParams) -> None:
        self.rebuilder.since_last_header()

    async def _on_connect(self) -> None:
        """After a reconnection (the broker restarted, or this service was frozen past
        its keepalive), what was said meanwhile is in the EFD: rebuilt as at enable."""
        await super()._on_connect()
        if self.bus.connections > 1 and self.state is State.ENABLED:
            self.rebuilder.since_last_header()

    async def state_changed(self, old: State, new: State) -> None:
        if old is State.ENABLED:
            await self._abandon_all(f"left ENABLED for {new.name}")

    async def _abandon_all(self, why: str) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._exposure_tasks.values() if t is not current]
        for image in list(self.exposures):
            if self._exposure_tasks.get(image) is not current:
                self.log.warning("exposure abandoned", image=image, reason=why)
        await cancel_and_wait(tasks, self.log, "abandoning exposures")

    # ---- messages ----------------------------------------------------------------------

    def _source(self, message: Received) -> None:
        """A message from a source of the keyword map: cached, and fed to the exposures'
        monitors."""
        address = message.address
        key = SourceKey(address.name, address.index, message.kind.value, message.name)
        self.cache.update(key, message.data, current_tai())
        for exposure in self.exposures.values():
            exposure.observe(key, message.data)

    def _on_start_integration(self, event: Parsed[StartIntegration]) -> None:
        if self.state is not State.ENABLED:
            return
        start = event.data
        image = start.imageName
        if image in self.exposures:
            self.log.warning("startIntegration repeated; ignored", image=image)
            return
        if ImageName.parse(image).code != self.camera.code:
            self.log.warning("ignored a startIntegration for another camera's image",
                             image=image, camera=self.camera.instrument)  # fmt: skip
            return
        if len(self.exposures) >= self.config.max_open_exposures:
            self._drop(image)
            return
        exposure = Exposure(start, self.rules, self.address.index)
        exposure.camera_event(CameraMoment("start", start), self.cache, current_tai())
        self.exposures[image] = exposure
        self._finished[image] = asyncio.Event()
        wait = min(start.timeout, _LONGEST_WAIT) if start.timeout > 0 else 60.0
        self._exposure_tasks[image] = self.jobs.spawn(
            self._complete(exposure, wait), f"exposure-{image}",
            on_error=lambda exc: self._exposure_failed(image, exc),
        )  # fmt: skip

    def _drop(self, image: str) -> None:
        """Drop a startIntegration beyond ``max_open_exposures``: a warning at most every
        minute, saying how many went since the last (a flood must not flood the log)."""
        self.exposures_dropped += 1
        self._drops.warning(self.log, "too many exposures open; startIntegration dropped",
                            image=image, open=len(self.exposures))  # fmt: skip

    async def _exposure_failed(self, image: str, exc: BaseException) -> None:
        """An exposure's task failed in a way nobody planned for (a bug): its traceback
        is logged already (:class:`~cscs.core.tasks.Jobs`); this says the header of
        ``image`` is lost, and the service carries on.

        Why not FAULT (``task_failed``): an exposure is made of what others publish, and
        anyone on the network can publish anything. If odd input could reach a bug here,
        a FAULT would hand whoever sent it the power to stop every header after it; an
        abandoned exposure costs one header, which the archiver notices (it archives the
        image without it, ``headerComplete`` false) and this ERROR names. Failures whose
        cause is the service itself (a document it cannot write or announce) still FAULT
        (5001, 5002, 5003), as they would fail for every image."""
        self.log.error("exposure abandoned after an unexpected error", image=image,
                       error=repr(exc))  # fmt: skip

    def _on_focal_plane(self, event: Parsed[FocalPlaneSummaryInfo]) -> None:
        """Which CCD is in which slot (``CCD_MANU``, ``LSST_NUM`` …): kept for every
        header from now on; only this camera's detectors."""
        hardware = event.data.by_detector()
        self.hardware = {k: v for k, v in hardware.items() if k in self._detectors}

    def _on_start_readout(self, event: Parsed[StartReadout]) -> None:
        self._moment(event.data.imageName, CameraMoment(START_READOUT.name, event.data))

    def _on_end_readout(self, event: Parsed[EndReadout]) -> None:
        exposure = self.exposures.get(event.data.imageName)
        if exposure is None:
            return
        others = [s for s in event.data.sensor_names if s not in self._detectors]
        if others:  # the document lists the sensors: only this camera's
            self.log.warning("ignored an endReadout naming another camera's sensors",
                             image=exposure.image, sensors=",".join(others[:5]))  # fmt: skip
            return
        self._moment(exposure.image, CameraMoment(END_READOUT.name, event.data))

    def _on_end_of_image_telemetry(self, event: Parsed[EndOfImageTelemetry]) -> None:
        self._moment(event.data.imageName, CameraMoment("end", event.data))

    def _moment(self, image: str, moment: CameraMoment) -> None:
        """A moment of ``image``'s exposure has come: take its values (the same step as
        :func:`~cscs.header_service.collect.replay` takes from the EFD)."""
        exposure = self.exposures.get(image)
        if exposure is None:
            return
        exposure.camera_event(moment, self.cache, current_tai())
        if exposure.complete:
            self._finished[image].set()

    # ---- finishing an exposure ---------------------------------------------------------

    async def exposure_done(self, image: str) -> None:
        """Return once ``image``'s exposure is over (announced, abandoned or failed) and
        nothing of it runs any more; at once if it is not in progress. For a caller in
        this process (a test, a tool embedding the CSC): its announcement is heard just
        before the exposure is let go, so hearing it is not yet this."""
        task = self._exposure_tasks.get(image)
        if task is not None:
            await asyncio.wait([task])

    async def _complete(self, exposure: Exposure, wait: float) -> None:
        image = exposure.image
        try:
            try:
                async with asyncio.timeout(wait):  # not wait_for: it can swallow a cancel
                    await self._finished[image].wait()
            except TimeoutError:
                # Events already delivered first: after a pause (SIGSTOP, a stalled loop)
                # the end may be waiting unread while this timer, due long ago, fires.
                await self.bus.settled(_SETTLE_LIMIT)
            if not self._finished[image].is_set():
                self.log.warning(
                    "exposure abandoned: its end never came",
                    image=image,
                    waited=wait,
                    missing=",".join(sorted(exposure.pending_moments)),
                )
                self.rebuilder.later(image)  # the EFD may have heard its end
                return
            await self._publish_header(exposure)
        finally:
            self.exposures.pop(image, None)
            self._finished.pop(image, None)
            self._exposure_tasks.pop(image, None)

    def _write_header(self, exposure: Exposure) -> tuple[RenderedHeader, str]:
        """Derive, render and write one header (in a worker thread: astropy and the
        file system take milliseconds the event loop should not wait for)."""
        image = exposure.image
        document = make_header(
            self.camera, exposure, self.hardware, camera_source=str(self.camera_address),
            generator=str(self.address), version=self.version, origin="live",
        )  # fmt: skip
        path = header_path(self.output_dir, image)  # the rebuild's rule too
        try:
            files.write_atomically(path, document.data)
        except OSError as exc:
            raise HeaderWriteError(f"cannot write the header of {image} to {path}: {exc}") from exc
        return document, path.resolve().as_uri()

    async def _publish_header(self, exposure: Exposure) -> None:
        image = exposure.image
        try:
            document, url = await asyncio.to_thread(self._write_header, exposure)
        except HeaderWriteError as exc:
            await self.fault(ERROR_CANNOT_WRITE, str(exc))
            return
        except files.PathEscapeError as exc:  # a name that got past the event's checks
            self.log.error("header refused: its path would leave the output directory",
                           image=image, error=str(exc))  # fmt: skip
            return
        except Exception as exc:
            await self.fault_from_exception(
                ERROR_INTERNAL, f"could not make the header of {image} (a bug)", exc
            )
            return
        announced = await self._announce(image, document, url, rebuilt=False)
        if not announced:
            await self.fault(
                ERROR_CANNOT_PUBLISH,
                f"the header of {image} is written ({url}) but could not be announced: "
                "the broker stayed unreachable",
            )
        elif document.missing:
            self.log.warning("header incomplete", image=image, missing=",".join(document.missing))
            self.rebuilder.later(image)  # the EFD may have heard what this service did not

    async def _announce(
        self, image: str, document: RenderedHeader, url: str, *, rebuilt: bool
    ) -> bool:
        """``largeFileObjectAvailable`` then the retained ``latestImage``; whether the
        first went out."""
        announced = await self.publish_event(
            LARGE_FILE_OBJECT_AVAILABLE,
            LargeFileObjectAvailable(
                id=image,
                url=url,
                byteSize=len(document.data),
                checkSum=document.md5,
                mimeType=MIME_TYPE,
                generator=str(self.address),
                version=self.version,
                missingKeywords=",".join(document.missing),
                rebuilt=rebuilt,
            ),
        )
        if announced:
            said = "header rebuilt from the EFD" if rebuilt else "header written"
            await self.publish_event(LATEST_IMAGE, LatestImage(imageName=image, description=said))
        return announced

    # ---- rebuilt from the EFD ------------------------------------------------------------

    def _efd_headers(
        self, rules: list[KeywordRule], output_dir: Path
    ) -> Callable[[EfdStore], EfdHeaders]:
        def make(store: EfdStore) -> EfdHeaders:
            return EfdHeaders(store, self.camera, self.address.index, rules, output_dir,
                              generator=str(self.address), version=self.version)  # fmt: skip

        return make

    async def _announce_rebuilt(self, outcome: Outcome) -> None:
        """A rebuilt header is announced like any (a broker that stays unreachable is
        logged, not a FAULT: the document is written, and catch-up finds it there)."""
        if outcome.document is None or not outcome.url:
            return
        rebuilt = outcome.rebuilt
        if not await self._announce(outcome.image, outcome.document, outcome.url, rebuilt=rebuilt):
            self.log.error("a rebuilt header is written but could not be announced",
                           image=outcome.image, url=outcome.url)  # fmt: skip

    async def do_rebuild_headers(self, params: RebuildHeaders, context: CommandContext) -> str:
        """``rebuildHeaders``: the range checked first, then each image from the EFD."""
        try:
            images = image_range(params, self.camera.code)
        except ValueError as exc:
            raise ExpectedError(str(exc)) from None
        await context.in_progress(600.0, f"rebuilding up to {len(images)} header(s)")
        try:
            counts = await self.rebuilder.images(images)
        except EfdStoreError as exc:
            raise ExpectedError(f"the EFD cannot be read ({self.settings.efd}): {exc}") from None
        return f"{len(images)} image(s): {summary(counts)}"
