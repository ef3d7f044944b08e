"""The Header Service CSC: for every exposure, the header the archiver needs.

``HeaderService:{index}`` follows ``Camera:{index}``. On ``startIntegration`` it opens a
collection for that image and takes the ``start`` values; it feeds the exposure's
monitors from every source message; on ``endOfImageTelemetry`` (and any other camera
event the map names) it takes the rest. When every moment has come it derives the
computed keywords, writes the header document (atomically) and publishes
``largeFileObjectAvailable`` with its URL, size and MD5 (ICD §6).

Exposures are independent: any number may overlap. Each waits for its end no longer
than its ``startIntegration.timeout``; then it is abandoned, logged, and nothing of it
is left running. If a header cannot be written or announced, the CSC goes to FAULT
with an ``errorCode`` saying which image and why (the observatory's own header service
did not, and headers went missing silently).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator

from cscs import __version__
from cscs.core import files
from cscs.core import generic as g
from cscs.core.camera_events import CAMERA_EVENTS, LATEST_IMAGE, LatestImage, parse_event
from cscs.core.commands import CommandBinding
from cscs.core.config import ConfigSchema
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.geometry import Camera, camera_for_index
from cscs.core.observatory import pointing
from cscs.core.remote import Received
from cscs.core.schema import EventSpec, Payload
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress
from cscs.header_service.collect import Exposure, KeywordRule, SourceCache, SourceKey
from cscs.header_service.derived import DERIVED_KEYWORDS, derived_keywords
from cscs.header_service.document import MIME_TYPE, HeaderDocument, render

__all__ = ["HeaderServiceConfig", "HeaderServiceCsc"]

ERROR_CANNOT_WRITE = 5001
ERROR_CANNOT_PUBLISH = 5002
ERROR_INTERNAL = 5003


class HeaderWriteError(Exception):
    """The header document could not be written (disk full, permissions, …)."""


DERIVED = frozenset(DERIVED_KEYWORDS)


class LargeFileObjectAvailable(Payload):
    id: str
    """the image name"""
    url: str
    byteSize: int
    checkSum: str
    """MD5 of the document, hex"""
    mimeType: str
    generator: str
    version: str
    missingKeywords: str
    """comma-separated keywords that could not be collected (empty: header complete)"""


LARGE_FILE_OBJECT_AVAILABLE = EventSpec(
    "largeFileObjectAvailable", LargeFileObjectAvailable, "A header document is ready."
)


class HeaderServiceConfig(ConfigSchema):
    output_dir: str = ""
    """Where header documents go (`{output_dir}/{dayObs}/{image}.yaml`); empty for
    `$CSCS_STATE_DIR/headers/HeaderService-{index}`."""
    keywords: list[KeywordRule] = []

    def output_path(self) -> Path | None:
        return Path(self.output_dir).expanduser() if self.output_dir else None

    @field_validator("keywords")
    @classmethod
    def _unique(cls, rules: list[KeywordRule]) -> list[KeywordRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.keyword in DERIVED:
                raise ValueError(f"{rule.keyword} is computed by the header service, not mapped")
            if rule.keyword in seen:
                raise ValueError(f"keyword {rule.keyword} is mapped twice")
            seen.add(rule.keyword)
        return rules


class HeaderServiceCsc(BaseCsc):
    interface = g.GENERIC.extended(
        "HeaderService",
        "Collects each exposure's header metadata from the bus and publishes the header "
        "document for the archiver (index = camera). The document format and the keyword "
        "map are described in `cscs/header_service/document.py` and `collect.py`; "
        "`largeFileObjectAvailable.missingKeywords` is an addition to ICD §6.",
        events=(LARGE_FILE_OBJECT_AVAILABLE, LATEST_IMAGE),
    )
    config_schema = HeaderServiceConfig
    default_config_dir: ClassVar[Path | None] = Path(__file__).parent / "config"

    def __init__(self, index: int = 1, **kwargs: Any) -> None:
        self.camera: Camera = camera_for_index(index)
        super().__init__(index, **kwargs)
        self.camera_address = CscAddress("Camera", index, self.address.prefix)
        self.header_config = HeaderServiceConfig()
        self._default_output_dir = self.state_dir / "headers" / f"HeaderService-{index}"
        self.output_dir = self._default_output_dir
        self.cache = SourceCache()
        self.exposures: dict[str, Exposure] = {}
        self._finished: dict[str, asyncio.Event] = {}
        self._exposure_tasks: dict[str, asyncio.Task[None]] = {}

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return ()

    # ---- configuration and subscriptions ----------------------------------------------

    async def configure(self, config: ConfigSchema) -> None:
        assert isinstance(config, HeaderServiceConfig)
        try:
            keys = {rule.key(self.address.index) for rule in config.keywords}
        except ValueError as exc:
            raise ExpectedError(f"keyword map: {exc}") from None
        self.header_config = config
        self.config = config
        self.output_dir = config.output_path() or self._default_output_dir
        await asyncio.to_thread(pointing, 0.0, -30.0, current_tai())  # load astropy now
        await self._listen(keys)

    async def _listen(self, keys: set[SourceKey]) -> None:
        await self.unfollow()
        prefix = self.address.prefix
        topics = {f"{prefix}/{k.name}/{k.index}/{k.kind}/{k.topic}" for k in keys}
        topics.add(f"{self.camera_address.root}/evt/+")
        for topic in sorted(topics):
            await self.follow(topic, self._receive)

    async def close(self) -> None:
        await self._abandon_all("closing")
        await super().close()

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

    def _receive(self, message: Received) -> None:
        address, kind, topic = message.address, message.kind.value, message.name
        now = current_tai()
        if (address.name, address.index, kind) == ("Camera", self.address.index, "evt"):
            if topic in CAMERA_EVENTS:
                self._camera_event(topic, message.data, now)
            return
        key = SourceKey(address.name, address.index, kind, topic)
        self.cache.update(key, message.data, now)
        for exposure in self.exposures.values():
            exposure.observe(key, message.data)

    def _camera_event(self, event: str, received: dict[str, Any], now: float) -> None:
        try:
            data = parse_event(CAMERA_EVENTS[event].payload, received).model_dump()
        except ValueError as exc:
            self.log.warning("ignored a malformed camera event", camera_event=event, error=str(exc))
            return
        image = data["imageName"]
        if event == "startIntegration":
            if self.state is State.ENABLED:
                self._begin(image, data, now)
            return
        exposure = self.exposures.get(image)
        if exposure is None:
            return
        exposure.events[event] = data
        exposure.reach("end" if event == "endOfImageTelemetry" else event, self.cache, now)
        if exposure.complete:
            self._finished[image].set()

    def _begin(self, image: str, data: dict[str, Any], now: float) -> None:
        if image in self.exposures:
            self.log.warning("startIntegration repeated; ignored", image=image)
            return
        exposure = Exposure(image, self.header_config.keywords, self.address.index)
        exposure.events["startIntegration"] = data
        exposure.reach("start", self.cache, now)
        self.exposures[image] = exposure
        self._finished[image] = asyncio.Event()
        wait = float(data["timeout"]) if data["timeout"] > 0 else 60.0
        self._exposure_tasks[image] = asyncio.create_task(
            self._complete(exposure, wait), name=f"{self.address}-{image}"
        )

    # ---- finishing an exposure ---------------------------------------------------------

    async def _complete(self, exposure: Exposure, wait: float) -> None:
        image = exposure.image
        try:
            try:
                async with asyncio.timeout(wait):  # not wait_for: it can swallow a cancel
                    await self._finished[image].wait()
            except TimeoutError:
                self.log.warning(
                    "exposure abandoned: its end never came",
                    image=image,
                    waited=wait,
                    missing=",".join(sorted(exposure.pending_moments)),
                )
                return
            await self._publish_header(exposure)
        finally:
            self.exposures.pop(image, None)
            self._finished.pop(image, None)
            self._exposure_tasks.pop(image, None)

    def _write_header(self, exposure: Exposure) -> tuple[HeaderDocument, Path]:
        """Derive, render and write one header (in a worker thread: astropy and the
        file system take milliseconds the event loop should not wait for)."""
        start = exposure.events["startIntegration"]
        primary = (
            derived_keywords(
                self.camera,
                start,
                exposure.events.get("endOfImageTelemetry"),
                exposure.values.get("RA"),
                exposure.values.get("DEC"),
            )
            + exposure.ordered()
        )
        readout = exposure.events.get("endReadout")
        sensors = (
            readout["sensors"].split(",")
            if readout and readout.get("sensors")
            else [d.name for d in self.camera.detectors]
        )
        image = exposure.image
        document = render(image, str(self.address), __version__, self.camera, sensors, primary)
        path = self.output_dir / str(start["imageDate"]) / f"{image}.yaml"
        try:
            files.write_atomically(path, document.data)
        except OSError as exc:
            raise HeaderWriteError(f"cannot write the header of {image} to {path}: {exc}") from exc
        return document, path

    async def _publish_header(self, exposure: Exposure) -> None:
        image = exposure.image
        try:
            document, path = await asyncio.to_thread(self._write_header, exposure)
        except HeaderWriteError as exc:
            await self.fault(ERROR_CANNOT_WRITE, str(exc))
            return
        except Exception as exc:
            await self.fault_from_exception(
                ERROR_INTERNAL, f"could not make the header of {image} (a bug)", exc
            )
            return
        announced = await self.publish_event(
            LARGE_FILE_OBJECT_AVAILABLE,
            LargeFileObjectAvailable(
                id=image,
                url=path.resolve().as_uri(),
                byteSize=len(document.data),
                checkSum=document.md5,
                mimeType=MIME_TYPE,
                generator=str(self.address),
                version=__version__,
                missingKeywords=",".join(document.missing),
            ),
        )
        if announced:
            await self.publish_event(
                LATEST_IMAGE, LatestImage(imageName=image, description="header written")
            )
        if not announced:
            await self.fault(
                ERROR_CANNOT_PUBLISH,
                f"the header of {image} is written ({path}) but could not be announced: "
                "the broker stayed unreachable",
            )
        elif document.missing:
            self.log.warning("header incomplete", image=image, missing=",".join(document.missing))
