"""``auto_qc``: image-qc on every image the OODS announces, without an operator.

An image can be selected by a data query only once it is in the archive's Butler
repository, so auto_qc follows the OODS's ``imageInOODS`` (CSC ``OODS``, any index; one
per image, again when its files are registered again): ``statusCode`` 0, every file of
the image is registered; otherwise the detectors listed in ``sensors`` are. Those of an
image are gathered until nothing has come for :data:`SETTLE` seconds, then one
``image-qc`` job measures them, through the same path as a commanded job (``origin``
``auto_qc``), its data query a Butler expression with bind values
(``instrument = inst AND exposure = exp AND detector IN (dets)``: no value is ever
formatted into a query). An announcement is validated where it is parsed (a forged one
names no file this CSC will read: the job reads what the repository and the catalog
both hold, and an image they do not have is logged and skipped). At most
:data:`MAX_PENDING` images gather at once (one more and the oldest is measured at
once), none for longer than :data:`MAX_WAIT`, however often it is announced. Only the
image types of ``auto_qc_image_types`` are measured (by default those that see the sky).
Its jobs are exclusive: an image another job measures already is not measured twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any, Protocol

from pydantic import Field
from structlog.typing import FilteringBoundLogger

from cscs.camera.geometry import Camera
from cscs.camera.naming import MAX_SENSORS, ImageName, ImageNameText, SensorListText
from cscs.catalog import Observation
from cscs.core.errors import ExpectedError
from cscs.core.remote import Received
from cscs.core.schema import Payload, parse_payload
from cscs.core.topics import CscAddress
from cscs.ocs_batch.catch_up import instruments_of
from cscs.ocs_batch.interface import Execute, OcsBatchConfig
from cscs.repository import detector_id, exposure_id

__all__ = ["AUTO_QC", "MAX_PENDING", "SETTLE", "AutoQc", "Queue", "qc_request"]

AUTO_QC = "auto_qc"  # the origin of its jobs

SETTLE = 2.0  # s after an image's last imageInOODS before it is measured
MAX_WAIT = 30.0  # s after its first, at the latest
MAX_PENDING = 64  # images gathering at once; one more: the oldest is measured now


_EVERY = "*"  # among an image's pending detectors: every one the repository has
_CAMERAS = {camera.code: camera for camera in Camera}


class _InOods(Payload):
    """What auto_qc needs of the OODS's ``imageInOODS``."""

    imageName: ImageNameText
    instrument: str = Field(max_length=32)
    sensors: SensorListText = ""
    """comma-separated; with ``statusCode`` not 0, the detectors registered"""
    statusCode: int


def qc_request(image: str, sensors: Collection[str]) -> Execute:
    """The ``image-qc`` request for these detectors of an image (none: every one the
    repository has): a Butler expression and its bind values, no value in its text.
    ValueError for an image of no known camera."""
    code = ImageName.parse(image).code
    camera = _CAMERAS.get(code)
    if camera is None:
        raise ValueError(f"{image}: no camera has the code {code}")
    where = "instrument = inst AND exposure = exp"
    bind: dict[str, object] = {"inst": camera.instrument, "exp": exposure_id(image)}
    if sensors:
        where += " AND detector IN (dets)"
        bind["dets"] = sorted(detector_id(camera.instrument, s) for s in sensors)
    return Execute(pipeline="image-qc", dataQuery=where, config=json.dumps({"bind": bind}))


class Queue(Protocol):
    """What auto_qc needs of the job queue (:class:`~cscs.ocs_batch.job_queue.JobQueue`)."""

    async def execute(
        self, params: Execute, origin: str, seq: int, *, exclusive: bool = False
    ) -> object:
        """Check and queue a job; ExpectedError if it cannot run."""

    async def observation(self, image: str) -> Observation | None: ...

    async def publish_stage(self, image: str, status: str, description: str) -> None: ...


Follow = Callable[[str, Callable[[Received], None]], Awaitable[None]]  # topic, handler


class AutoQc:
    def __init__(
        self,
        queue: Queue,
        *,
        follow: Follow,
        prefix: str,
        enabled: Callable[[], bool],
        spawn: Callable[[Coroutine[Any, Any, None], str], object],
        log: FilteringBoundLogger,
    ) -> None:
        self._queue = queue
        self._follow = follow
        self._prefix = prefix
        self._enabled = enabled
        self._spawn = spawn
        self._log = log
        self.pending: dict[str, set[str]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._first: dict[str, float] = {}  # loop time of each pending image's first file
        self.sensors: frozenset[str] = frozenset()
        self.image_types: frozenset[str] = frozenset()
        self.instruments: frozenset[str] = frozenset()  # of auto_qc_cameras
        self._starting: set[str] = set()  # images being submitted by measure()

    async def configure(self, config: OcsBatchConfig) -> None:
        self._forget_all()
        self.sensors = frozenset(config.auto_qc_sensors)
        self.image_types = frozenset(config.auto_qc_image_types)
        self.instruments = instruments_of(config.auto_qc_cameras)
        if not config.auto_qc:
            return
        # Any OODS: one per site usually, but its index is the site's to choose.
        root = CscAddress("OODS", 0, self._prefix).root.rsplit("/", 1)[0]
        await self._follow(f"{root}/+/evt/imageInOODS", self._heard)

    def _heard(self, message: Received) -> None:
        if not self._enabled() or message.retained:
            return
        try:
            announced = parse_payload(_InOods, message.data)
            image = announced.imageName
            camera = _CAMERAS.get(ImageName.parse(image).code)
            if camera is None or camera.instrument != announced.instrument:
                raise ValueError(f"{image} is not an image of {announced.instrument[:32]!r}")
        except ValueError as exc:
            self._log.warning(
                "ignored a malformed imageInOODS", source=str(message.address), error=str(exc)
            )
            return
        if camera.instrument not in self.instruments:
            return
        listed = {s for s in announced.sensors.split(",") if s}
        if announced.statusCode != 0 and not listed:
            self._log.warning("the OODS registered no file of an image", image=image,
                              status=announced.statusCode)  # fmt: skip
            return
        if self.sensors:
            listed = (listed & self.sensors) if listed else set(self.sensors)
            if not listed:
                return
        elif not listed or announced.statusCode == 0:
            listed = {_EVERY}  # every file registered: whatever the repository has
        self._gather(image, listed)

    def _gather(self, image: str, listed: set[str]) -> None:
        loop = asyncio.get_running_loop()
        if image not in self.pending:
            if len(self.pending) >= MAX_PENDING:  # measure the oldest now, make room
                self._settled(next(iter(self.pending)))
            self._first[image] = loop.time()
        sensors = self.pending.setdefault(image, set())
        sensors.update(sorted(listed)[: max(0, MAX_SENSORS + 1 - len(sensors))])
        timer = self._timers.pop(image, None)
        if timer is not None:
            timer.cancel()
        # Settled when quiet for SETTLE s, or MAX_WAIT s after its first file at the
        # latest: announcements repeated for ever cannot hold an image back.
        delay = min(SETTLE, max(0.0, self._first[image] + MAX_WAIT - loop.time()))
        self._timers[image] = loop.call_later(delay, self._settled, image)

    def _settled(self, image: str) -> None:
        timer = self._timers.pop(image, None)
        if timer is not None:
            timer.cancel()
        self._first.pop(image, None)
        sensors = self.pending.pop(image, set())
        if sensors and self._enabled():
            every = _EVERY in sensors
            self._spawn(self._measure(image, set() if every else sensors), f"auto-qc-{image}")

    def held(self) -> set[str]:
        """Images auto_qc is gathering or submitting (not yet a job in the queue)."""
        return set(self.pending) | self._starting

    async def _measure(self, image: str, sensors: set[str]) -> None:
        await self.measure(image, sensors, AUTO_QC)

    async def measure(self, image: str, sensors: Collection[str], origin: str) -> bool:
        """One ``image-qc`` job (origin ``origin``, not awaited) for these detectors of
        the image (none: every one in the repository), unless it is not of the types
        measured (its stage then says ``skipped``) or is being measured already; whether
        a job was queued. The path of auto_qc's jobs and of QC's catch-up
        (:mod:`cscs.ocs_batch.catch_up`)."""
        self._starting.add(image)
        try:
            observation = await self._queue.observation(image)
            if observation is not None and observation.image_type not in self.image_types:
                # A bias's "seeing" is its cosmic rays: nothing to measure or to judge;
                # the stage says so, so that nobody waits for its QC.
                kind = observation.image_type or "no type"
                await self._queue.publish_stage(image, "skipped", f"a {kind} image: no sky")
                return False
            try:  # its end is not awaited; exclusive: never a second job for an image
                await self._queue.execute(qc_request(image, sensors), origin, 0, exclusive=True)
            except (ExpectedError, ValueError) as exc:  # not in the repository, queue full…
                self._log.warning("QC could not start", image=image, origin=origin,
                                  error=str(exc))  # fmt: skip
                return False
            return True
        finally:
            self._starting.discard(image)

    def _forget_all(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._first.clear()
        self.pending.clear()
