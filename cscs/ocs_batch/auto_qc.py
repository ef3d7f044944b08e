"""``auto_qc``: image-qc on every image the archivers announce, without an operator.

The archivers publish one ``imageArchived`` per detector. Those of an image are
gathered until none has come for :data:`SETTLE` seconds (a ComCam image's nine arrive
within a second or two), then one ``image-qc`` job measures them, through the same path
as a commanded job (``origin`` ``auto_qc``). An announcement is validated where it is
parsed (a forged one names no file this CSC will read: the job reads what the catalog
holds, and an image it does not have is logged and skipped). At most
:data:`MAX_PENDING` images gather at once (one more and the oldest is measured at
once), none for longer than :data:`MAX_WAIT`, however often it is announced. Only the
image types of ``auto_qc_image_types`` are measured (by default those that see the sky).
Its jobs are exclusive: an image another job measures already is not measured twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from cscs.camera.naming import MAX_SENSORS, ImageNameText, SensorText
from cscs.catalog import Observation
from cscs.core.errors import ExpectedError
from cscs.core.remote import Received
from cscs.core.schema import Payload, parse_payload
from cscs.core.topics import CscAddress
from cscs.ocs_batch.interface import Execute, OcsBatchConfig

__all__ = ["AUTO_QC", "MAX_PENDING", "SETTLE", "AutoQc", "Queue"]

AUTO_QC = "auto_qc"  # the origin of its jobs

SETTLE = 2.0  # s after an image's last imageArchived before it is measured
MAX_WAIT = 30.0  # s after its first, at the latest
MAX_PENDING = 64  # images gathering at once; one more: the oldest is measured now


class _Archived(Payload):
    """What auto_qc needs of an archiver's ``imageArchived`` (ICD §6)."""

    imageName: ImageNameText
    sensor: SensorText


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
        self._starting: set[str] = set()  # images being submitted by measure()

    async def configure(self, config: OcsBatchConfig) -> None:
        self._forget_all()
        self.sensors = frozenset(config.auto_qc_sensors)
        self.image_types = frozenset(config.auto_qc_image_types)
        if not config.auto_qc:
            return
        for index in config.auto_qc_cameras:
            topic = CscAddress("Archiver", index, self._prefix).event("imageArchived")
            await self._follow(topic, self._heard)

    def _heard(self, message: Received) -> None:
        if not self._enabled() or message.retained:
            return
        try:
            archived = parse_payload(_Archived, message.data)
        except ValueError as exc:
            self._log.warning(
                "ignored a malformed imageArchived", source=str(message.address), error=str(exc)
            )
            return
        if self.sensors and archived.sensor not in self.sensors:
            return
        image = archived.imageName
        loop = asyncio.get_running_loop()
        if image not in self.pending:
            if len(self.pending) >= MAX_PENDING:  # measure the oldest now, make room
                self._settled(next(iter(self.pending)))
            self._first[image] = loop.time()
        sensors = self.pending.setdefault(image, set())
        if len(sensors) >= MAX_SENSORS:
            return
        sensors.add(archived.sensor)
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
            self._spawn(self._measure(image, sensors), f"auto-qc-{image}")

    def held(self) -> set[str]:
        """Images auto_qc is gathering or submitting (not yet a job in the queue)."""
        return set(self.pending) | self._starting

    async def _measure(self, image: str, sensors: set[str]) -> None:
        await self.measure(image, sensors, AUTO_QC)

    async def measure(self, image: str, sensors: Collection[str], origin: str) -> bool:
        """One ``image-qc`` job (origin ``origin``, not awaited) for these detectors of
        the image, unless it is not of the types measured (its stage then says
        ``skipped``) or is being measured already; whether a job was queued. The path
        of auto_qc's jobs and of QC's catch-up (:mod:`cscs.ocs_batch.catch_up`)."""
        self._starting.add(image)
        try:
            observation = await self._queue.observation(image)
            if observation is not None and observation.image_type not in self.image_types:
                # A bias's "seeing" is its cosmic rays: nothing to measure or to judge;
                # the stage says so, so that nobody waits for its QC.
                kind = observation.image_type or "no type"
                await self._queue.publish_stage(image, "skipped", f"a {kind} image: no sky")
                return False
            query = f"image = {image} and sensor in ({', '.join(sorted(sensors))})"
            params = Execute(pipeline="image-qc", dataQuery=query)
            try:  # its end is not awaited; exclusive: never a second job for an image
                await self._queue.execute(params, origin, 0, exclusive=True)
            except ExpectedError as exc:  # not archived here, the queue full, measured…
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
