"""QC caught up: images archived without a QC stage are measured later, not never.

auto_qc measures what the OODS announces in the repository; an announcement heard by
nobody (OCSBatch down, restarting, its broker restarting) or a job cut short by
OCSBatch's own death would otherwise leave the image without QC for good. So at ``enable`` and every
``auto_qc_catch_up_interval`` seconds a pass asks the catalog
(:meth:`~cscs.catalog.batch.BatchRecords.qc_due`) for archived images of auto_qc's
cameras, image types and detectors whose detectors have neither QC metrics nor a
given-up failure (``qc_attempts``), oldest first — of those, only the detectors whose
files are in the repository already (a data query selects nothing else; the others are
skipped this pass, the OODS registering them meanwhile) — and measures them through auto_qc's
own path (:meth:`~cscs.ocs_batch.auto_qc.AutoQc.measure`, origin ``qc_catch_up``), so
their stages and summaries go where auto_qc's go and the Telemetry Gateway forwards
them as usual.

Bounded: at most ``auto_qc_catch_up_images`` catch-up jobs unfinished at once (a pass
submits only the difference), one image each. Never twice: images a queued or running
job measures, or that auto_qc is gathering, are excluded in the query, and the queue
refuses an exclusive job for an image being measured (checked where the job enters it).
Files archived in the last ``auto_qc_catch_up_grace`` seconds are left to auto_qc,
whose announcement may be on its way. A catalog that cannot be read costs the pass,
said in the log; the next one tries again. An image whose job is refused (``execute``
says no: too many files, a plan error…) counts as an attempt of its detectors, and the
pass asks again past it (a few times): images always refused are given up after
``MAX_QC_ATTEMPTS`` passes and never keep newer ones from QC.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from cscs.camera.geometry import Camera
from cscs.catalog import BatchRecords, Catalog, CatalogError
from cscs.catalog.batch import QcDue
from cscs.core.tai import current_tai
from cscs.ocs_batch.interface import OcsBatchConfig
from cscs.ocs_batch.shared_repository import RepositoryCalls
from cscs.repository import RepositoryError

__all__ = ["CATCH_UP", "CatchUp", "instruments_of"]

CATCH_UP = "qc_catch_up"  # the origin of its jobs
_DAY = 86400.0
_ROUNDS = 5  # queries a pass makes, each past the images the last one's jobs were refused


class Queue(Protocol):
    """What the catch-up needs of the job queue."""

    @property
    def records(self) -> BatchRecords | None: ...
    @property
    def catalog(self) -> Catalog | None: ...
    @property
    def repository(self) -> RepositoryCalls | None: ...

    def busy_images(self) -> set[str]: ...

    def unfinished(self, origin: str) -> int: ...


Measure = Callable[[str, Collection[str], str], Awaitable[bool]]  # image, sensors, origin


def instruments_of(cameras: Collection[int]) -> frozenset[str]:
    """The instruments of auto_qc's cameras (archiver indexes); unknown ones ignored."""
    known = {camera.value: camera.instrument for camera in Camera}
    return frozenset(known[index] for index in cameras if index in known)


class CatchUp:
    def __init__(
        self,
        queue: Queue,
        *,
        measure: Measure,
        held: Callable[[], set[str]],
        config: Callable[[], OcsBatchConfig],
        enabled: Callable[[], bool],
        log: FilteringBoundLogger,
    ) -> None:
        self._queue = queue
        self._measure = measure
        self._held = held
        self._config = config
        self._enabled = enabled
        self._log = log
        self._wake = asyncio.Event()
        self._one_at_a_time = asyncio.Lock()  # a pass sees the queue as the last left it
        self.passes = 0  # passes run (for tests and the log)
        self.submitted = 0  # jobs queued, in all

    def wake(self) -> None:
        """Run a pass now (the CSC was enabled)."""
        self._wake.set()

    async def loop(self) -> None:
        """Passes for as long as the CSC runs: at each wake, and every interval."""
        while True:
            self._wake.clear()
            await self.run_pass()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config().auto_qc_catch_up_interval):
                    await self._wake.wait()

    async def run_pass(self) -> int:
        """One pass (after any under way): the images due, measured; how many jobs were
        queued."""
        async with self._one_at_a_time:
            return await self._pass()

    async def _pass(self) -> int:
        config = self._config()
        records, catalog = self._queue.records, self._queue.catalog
        repository = self._queue.repository
        on = self._enabled() and config.auto_qc and config.auto_qc_catch_up
        if not on or not records or not catalog or not repository:
            return 0
        room = config.auto_qc_catch_up_images - self._queue.unfinished(CATCH_UP)
        if room <= 0:
            return 0
        now = current_tai()
        exclude = self._queue.busy_images() | self._held()
        queued = found = 0
        read = False
        for _ in range(_ROUNDS):  # past the images refused, to newer ones
            try:
                due = await asyncio.to_thread(
                    records.qc_due, image_types=config.auto_qc_image_types,
                    instruments=instruments_of(config.auto_qc_cameras),
                    sensors=config.auto_qc_sensors,
                    since_tai=now - config.auto_qc_catch_up_days * _DAY,
                    archived_before_tai=now - config.auto_qc_catch_up_grace,
                    exclude=exclude, limit=room - queued,
                )  # fmt: skip
                ready, unregistered = await asyncio.to_thread(
                    in_repository, due, catalog, repository
                )
            except (CatalogError, RepositoryError) as exc:
                self._log.warning("QC catch-up cannot read the catalog or the repository; "
                                  "next pass", error=str(exc))  # fmt: skip
                if not read:
                    return 0
                break
            read = True
            found += len(due)
            done, refused = await self._submit(ready, records)
            queued += done
            # Never the same image twice in a pass: one queued here may still be measuring.
            exclude |= {image.image_name for image in ready} | unregistered
            if not (refused or unregistered) or queued >= room:
                break
        self.passes += 1
        if found:
            self._log.info("QC catch-up", due=found, queued=queued)
        return queued

    async def _submit(self, due: list[QcDue], records: BatchRecords) -> tuple[int, set[str]]:
        """(jobs queued, images refused). A refused image is recorded as an attempt of
        its detectors (given up after ``MAX_QC_ATTEMPTS``): an image the queue always
        refuses would otherwise be first in every pass, and newer images never measured."""
        queued, refused = 0, set[str]()
        for image in due:
            if not self._enabled():
                break
            if await self._measure(image.image_name, image.sensors, CATCH_UP):
                queued += 1
                continue
            refused.add(image.image_name)
            detectors = [(image.image_name, sensor) for sensor in image.sensors]
            try:
                await asyncio.to_thread(records.record_qc_failure, detectors, "",
                                        "its QC job was refused", current_tai(),
                                        final=False)  # fmt: skip
            except CatalogError as exc:
                self._log.warning("QC catch-up cannot record a refusal", image=image.image_name,
                                  error=str(exc))  # fmt: skip
        self.submitted += queued
        return queued, refused


def in_repository(
    due: list[QcDue], catalog: Catalog, repository: RepositoryCalls
) -> tuple[list[QcDue], set[str]]:
    """(the images due, each with only its detectors whose files are in the repository;
    the images none of whose files are yet). Blocking: reads both."""
    paths: dict[str, tuple[str, str]] = {}
    for image in due:
        wanted = set(image.sensors)
        for row in catalog.files_of(image.image_name):
            if row.sensor in wanted:
                paths[row.path] = (row.image_name, row.sensor)
    given = {Path(path).absolute(): pair for path, pair in paths.items()}
    registered = {given[path] for path in repository.registered(list(given)) if path in given}
    ready: list[QcDue] = []
    waiting: set[str] = set()
    for image in due:
        sensors = tuple(s for s in image.sensors if (image.image_name, s) in registered)
        if sensors:
            ready.append(QcDue(image.image_name, image.instrument, image.exposure_start_tai,
                               sensors))  # fmt: skip
        else:
            waiting.add(image.image_name)
    return ready, waiting
