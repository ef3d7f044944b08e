"""Catch-up: archive what the DAQ holds and the catalog lacks, oldest first, keeping
``sensors_in_flight`` under way so the DAQ, the cores and the disk stay busy even for
a one-sensor camera; then complete the files archived without a header whose header
has been announced since, or can be found where the header service writes.

The plan is pure (:mod:`~cscs.archiver.plan`); this module lists, filters out names
that are not this camera's (the DAQ is trusted to list, not to name), and drives the
work through the archiver's own ``archive`` and ``complete`` steps.
:func:`catch_up_periodically` runs a pass every ``catchup_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import Awaitable, Callable

from structlog.typing import FilteringBoundLogger

from cscs.archiver.headers import HeaderSource
from cscs.archiver.plan import header_wait, plan_catch_up
from cscs.archiver.rebuild_requests import RebuildRequests
from cscs.archiver.store import ArchiveStore, check_image
from cscs.camera.geometry import Camera
from cscs.core.errors import ExpectedError
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.text import peer_text
from cscs.daq.errors import DaqError
from cscs.daq.reader import DaqReader, ImageInfo

__all__ = ["CatchUp", "catch_up_periodically"]

# (image, sensor, seconds to wait for its header) -> archived now
Archive = Callable[[str, str, float], Awaitable[bool]]
Complete = Callable[[str], Awaitable[None]]  # image -> its files completed with the header
AskRebuild = Callable[[str], None]  # image -> its header service asked to rebuild it
MAX_ASKED = 20  # images a pass asks the header service to rebuild
_IMAGES_LOGGED = 20  # images a pass names one by one in the log; the rest are counted


class CatchUp:
    def __init__(
        self,
        camera: Camera,
        headers: HeaderSource,
        archive: Archive,
        complete: Complete,
        log: FilteringBoundLogger,
        header_timeout: Callable[[], float] = lambda: 0.0,
        ask_rebuild: AskRebuild | None = None,
        rebuild_after: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._camera = camera
        self._detectors = {d.name for d in camera.detectors}
        self._headers = headers
        self._archive = archive
        self._complete = complete
        self._log = log
        self._header_timeout = header_timeout
        self._ask_rebuild = ask_rebuild
        self._rebuild_after = rebuild_after
        self.rebuilds = RebuildRequests()

    async def run(
        self, daq: DaqReader | None, store: ArchiveStore, in_flight: int
    ) -> tuple[int, int]:
        """(files archived, files that could not be read); ExpectedError if the DAQ
        cannot be listed."""
        if daq is None:
            raise ExpectedError("no DAQ known yet: is the camera running? (or set daq_url)")
        try:
            listed = await daq.list_images()
        except DaqError as exc:
            raise ExpectedError(f"cannot list the DAQ's images: {exc}") from None
        images = self._ours(listed)
        names = [image.name for image in images if image.complete]
        archived = await asyncio.to_thread(store.archived_sensors, names)
        todo = plan_catch_up(images, archived)
        now, timeout = current_tai(), self._header_timeout()
        waits = {image.name: header_wait(image, now, timeout) for image in images}
        self._say_what_is_missing(todo, waits)
        results = await self._in_order([(i, s, waits[i]) for i, s in todo], in_flight)
        headerless = await asyncio.to_thread(store.without_header)
        for name in dict.fromkeys(row.image_name for row in headerless):
            # Announced since, or written where the header service writes while this
            # archiver was not listening (ICD 1.1 "Missed announcements"), perhaps
            # rebuilt from the EFD since it was last read.
            announced = self._headers.is_announced(name)
            self._headers.forget_fetched(name)  # read again: it may have been rebuilt
            if announced or await self._headers.get(name, wait=0):
                await self._complete(name)
        await self._ask_for_rebuilds(store)
        return sum(results), len(todo) - sum(results)

    async def _ask_for_rebuilds(self, store: ArchiveStore) -> None:
        """Files still without a complete header a while after they were archived: their
        header service is asked to rebuild it from the EFD (:mod:`.rebuild_requests`)."""
        if self._ask_rebuild is None:
            return
        incomplete: dict[str, float] = {}
        for row in await asyncio.to_thread(store.without_header):
            first = incomplete.get(row.image_name, row.archived_tai)
            incomplete[row.image_name] = min(first, row.archived_tai)
        due = self.rebuilds.due(incomplete, current_tai(), self._rebuild_after(), MAX_ASKED)
        if self.rebuilds.full:
            self._log.warning("too many images wait for a rebuilt header: newer ones not asked "
                              "for until some are complete or given up",
                              tracked=len(self.rebuilds))  # fmt: skip
        for image in due:
            self._ask_rebuild(image)

    def _ours(self, listed: list[ImageInfo]) -> list[ImageInfo]:
        """This camera's images of the listing, each once, with this camera's sensors
        (once each); the names refused said in one line per pass."""
        images: dict[str, ImageInfo] = {}
        refused: list[tuple[str, str]] = []
        for image in listed:
            try:
                check_image(self._camera, image.name)
            except ValueError as exc:
                refused.append((image.name, str(exc)))
                continue
            ours = tuple(dict.fromkeys(s for s in image.sensors if s in self._detectors))
            images.setdefault(image.name, dataclasses.replace(image, sensors=ours))
        if refused:
            name, error = refused[0]
            self._log.warning("the DAQ lists images this archiver cannot archive",
                              images=len(refused), first=peer_text(name),
                              error=peer_text(error))  # fmt: skip
        return list(images.values())

    def _say_what_is_missing(self, todo: list[tuple[str, str]], waits: dict[str, float]) -> None:
        """One line per image for the first few, then one line for the rest: linear in
        ``todo``, and a few lines however long the DAQ's listing."""
        missing: dict[str, list[str]] = {}
        for image, sensor in todo:
            missing.setdefault(image, []).append(sensor)
        for image, sensors in itertools.islice(missing.items(), _IMAGES_LOGGED):
            self._log.info("catching up", image=image, sensors=",".join(sensors),
                           header_wait=waits[image])  # fmt: skip
        if len(missing) > _IMAGES_LOGGED:
            self._log.info("catching up more images", images=len(missing) - _IMAGES_LOGGED,
                           sensors=sum(map(len, missing.values())))  # fmt: skip

    async def _in_order(self, todo: list[tuple[str, str, float]], in_flight: int) -> list[bool]:
        """Each (image, sensor) started in order, ``in_flight`` under way at once."""
        starts = asyncio.Semaphore(in_flight)

        async def one(image: str, sensor: str, wait: float) -> bool:
            try:
                return await self._archive(image, sensor, wait)
            finally:
                starts.release()

        tasks: list[asyncio.Task[bool]] = []
        try:
            for image, sensor, wait in todo:
                await starts.acquire()
                tasks.append(asyncio.create_task(one(image, sensor, wait)))
            return list(await asyncio.gather(*tasks))
        finally:
            await cancel_and_wait([t for t in tasks if not t.done()], self._log, "catch-up")


async def catch_up_periodically(
    interval: Callable[[], float],
    reconfigured: asyncio.Event,
    due: Callable[[], bool],
    catch_up: Callable[[], Awaitable[None]],
    log: FilteringBoundLogger,
) -> None:
    """Run ``catch_up()`` every ``interval()`` seconds (0: never) if it is ``due()`` then;
    ``reconfigured`` being set restarts the wait with the interval then configured.
    Nothing ends the loop but its cancellation (the CSC's end): a pass that fails
    unexpectedly (a bug) is logged, and the next one still comes."""
    while True:
        reconfigured.clear()
        seconds = interval()
        # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
        # that races with the wait ending, and this loop would then never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds or None):
                await reconfigured.wait()
            continue  # reconfigured: wait again, with the new interval
        if due():
            try:
                await catch_up()
            except Exception as exc:  # a bug: said, and the next pass still comes
                log.error("a catch-up pass failed unexpectedly", exc_info=exc)
