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
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cscs.camera.naming import MAX_SENSORS, ImageNameText, SensorText
from cscs.core.errors import ExpectedError
from cscs.core.remote import Received
from cscs.core.schema import Payload, parse_payload
from cscs.core.states import State
from cscs.core.topics import CscAddress
from cscs.ocs_batch.interface import Execute, OcsBatchConfig

if TYPE_CHECKING:
    from cscs.ocs_batch.csc import OcsBatchCsc

__all__ = ["MAX_PENDING", "SETTLE", "AutoQc"]

SETTLE = 2.0  # s after an image's last imageArchived before it is measured
MAX_WAIT = 30.0  # s after its first, at the latest
MAX_PENDING = 64  # images gathering at once; one more: the oldest is measured now


class _Archived(Payload):
    """What auto_qc needs of an archiver's ``imageArchived`` (ICD §6)."""

    imageName: ImageNameText
    sensor: SensorText


class AutoQc:
    def __init__(self, csc: OcsBatchCsc) -> None:
        self.csc = csc
        self.pending: dict[str, set[str]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._first: dict[str, float] = {}  # loop time of each pending image's first file
        self.sensors: frozenset[str] = frozenset()
        self.image_types: frozenset[str] = frozenset()

    async def configure(self, config: OcsBatchConfig) -> None:
        self._forget_all()
        self.sensors = frozenset(config.auto_qc_sensors)
        self.image_types = frozenset(config.auto_qc_image_types)
        if not config.auto_qc:
            return
        prefix = self.csc.address.prefix
        for index in config.auto_qc_cameras:
            topic = CscAddress("Archiver", index, prefix).event("imageArchived")
            await self.csc.follow_topic(topic, self._heard)

    def _heard(self, message: Received) -> None:
        if self.csc.state is not State.ENABLED or message.retained:
            return
        try:
            archived = parse_payload(_Archived, message.data)
        except ValueError as exc:
            self.csc.log.warning(
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
        if sensors and self.csc.state is State.ENABLED:
            self.csc.jobs.spawn(self._measure(image, sensors), f"auto-qc-{image}")

    async def _measure(self, image: str, sensors: set[str]) -> None:
        catalog = self.csc.catalog
        observation = await asyncio.to_thread(catalog.observation, image) if catalog else None
        if observation is not None and observation.image_type not in self.image_types:
            # A bias's "seeing" is its cosmic rays: nothing to measure or to judge; the
            # stage says so, so that nobody waits for its QC.
            kind = observation.image_type or "no type"
            await self.csc.runner.publish_stage(image, "skipped", f"a {kind} image: no sky")
            return
        query = f"image = {image} and sensor in ({', '.join(sorted(sensors))})"
        params = Execute(pipeline="image-qc", dataQuery=query)
        try:
            job, plan, previous = await self.csc._prepare(params, "auto_qc", 0)
            await self.csc.submit(job, plan, previous)
        except ExpectedError as exc:  # not archived here, the queue full, not ENABLED…
            self.csc.log.warning("auto QC could not start", image=image, error=str(exc))

    def _forget_all(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._first.clear()
        self.pending.clear()
