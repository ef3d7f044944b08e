"""The OODS's work loop: registration rounds, announcements and ConsDB rows, one at a
time (the registry and ConsDB are written by this process alone, in order), driven by
the ledger's and the retry set's deadlines.

A failure of a store (:class:`~cscs.oods.ports.StoreUnavailableError`) or of the
catalog (:class:`~cscs.catalog.CatalogError`) holds every round back for a back-off
delay (one for the whole OODS: when the registry is locked, every image would fail
alike), says so once (``errorCode``, log, ``oodsStatus``), and nothing is lost: the
image's files wait in the ledger. A file refused is the ledger's to retry, and said
in ``imageInOODS``. A ConsDB row that fails waits in the retry set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from structlog.typing import FilteringBoundLogger

from cscs.catalog import BatchRecords, CatalogError
from cscs.core.backoff import Backoff
from cscs.core.text import peer_text
from cscs.oods.interface import (
    ERROR_CATALOG_UNAVAILABLE,
    ERROR_CONSDB_UNAVAILABLE,
    ERROR_REPOSITORY_UNAVAILABLE,
    STATUS_FILES_REFUSED,
    STATUS_REGISTERED,
    ImageInOods,
    OodsConfig,
)
from cscs.oods.ledger import Announcement, ImageLedger
from cscs.oods.ports import ConsDbPort, StoreUnavailableError
from cscs.oods.registrar import Registrar, RoundOutcome
from cscs.oods.retries import RetrySet

__all__ = ["Stores", "Work"]

_LISTED = 10  # refused files named in one imageInOODS; the rest counted
_REASON = 300  # characters of a reason
_QC_WAITING = 10_000  # quick-look prompts held; beyond, the oldest left to reconciliation


@dataclass
class Stores:
    """What a configuration opened: the registrar (catalog + registry) and ConsDB."""

    registrar: Registrar
    consdb: ConsDbPort

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.registrar.registry.close()
        with contextlib.suppress(Exception):
            self.consdb.close()
        with contextlib.suppress(Exception):
            self.registrar.catalog.close()


@dataclass
class Counts:
    registered: int = 0
    last_error: str = ""
    repository_up: bool = True


@dataclass
class Work:
    config: OodsConfig
    instrument: str
    announce: Callable[[ImageInOods], Awaitable[object]]
    report_error: Callable[[int, str], Awaitable[None]]
    log: FilteringBoundLogger
    clock: Callable[[], float]
    stores: Stores | None = None
    counts: Counts = field(default_factory=Counts)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.ledger = ImageLedger(
            batch_delay=self.config.batch_delay, settle_delay=self.config.settle_delay,
            backoff=self._backoff, max_images=self.config.max_images_held,
        )  # fmt: skip
        self.consdb_retries: RetrySet[tuple[str, str]] = RetrySet(
            self._backoff, self.config.max_images_held
        )
        self.quicklook: OrderedDict[str, None] = OrderedDict()  # images whose QC to record
        self._outage = self._backoff()
        self._held_until = 0.0
        self._down: set[int] = set()  # error codes said and not yet recovered from

    def _backoff(self) -> Backoff:
        return Backoff(initial=self.config.retry_initial, maximum=self.config.retry_max)

    def reconfigured(self, config: OodsConfig) -> None:
        self.config = config
        self.ledger.batch_delay, self.ledger.settle_delay = config.batch_delay, config.settle_delay
        self.ledger.max_images = self.consdb_retries.capacity = config.max_images_held
        self._outage = self._backoff()
        self.wake.set()

    # ---- the loop ----------------------------------------------------------------------

    async def run(self, enabled: Callable[[], bool]) -> None:
        """Work while ``enabled()``; wait for a prompt or the next deadline otherwise."""
        while True:
            timeout = self._next_deadline() if enabled() else None
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self.wake.wait()
            self.wake.clear()
            if enabled() and self.stores is not None:
                await self.step(self.stores)

    def _next_deadline(self) -> float | None:
        now = self.clock()
        times = [self.ledger.next_event(), self.consdb_retries.next_due()]
        if self.quicklook:
            times.append(now)
        deadline = min((t for t in times if t is not None), default=None)
        if deadline is None:
            return None
        return max(deadline, self._held_until) - now

    async def step(self, stores: Stores) -> None:
        """Everything due now: rounds first (oldest deadline first), then announcements,
        ConsDB retries and quick-look records."""
        while self.clock() >= self._held_until:
            image = self.ledger.next_due(self.clock())
            if image is None:
                break
            await self._round(stores, image)
        for announcement in self.ledger.announcements(self.clock()):
            await self.announce(self._event(stores, announcement))
        self.drained.set()
        if self.clock() < self._held_until:
            return
        for (kind, image), sensors in self.consdb_retries.due(self.clock()):
            if kind == "image":
                await self._record_image(stores, image, sensors, None)
            else:
                await self._record_quicklook(stores, image)
        while self.quicklook and self.clock() >= self._held_until:
            image, _ = self.quicklook.popitem(last=False)
            await self._record_quicklook(stores, image)

    # ---- rounds ------------------------------------------------------------------------

    async def _round(self, stores: Stores, image: str) -> None:
        asked = self.ledger.take(image)
        try:
            outcome = await asyncio.to_thread(stores.registrar.round, image, asked)
        except (StoreUnavailableError, CatalogError) as exc:
            code = ERROR_CATALOG_UNAVAILABLE if isinstance(exc, CatalogError) \
                else ERROR_REPOSITORY_UNAVAILABLE  # fmt: skip
            self.counts.repository_up = code != ERROR_REPOSITORY_UNAVAILABLE
            retry_at = await self._unavailable(code, str(exc), image)
            self.ledger.unavailable(image, asked, retry_at)
            return
        self._recovered(ERROR_REPOSITORY_UNAVAILABLE, ERROR_CATALOG_UNAVAILABLE)
        self.counts.repository_up = True
        self._report_round(image, outcome)
        self.ledger.settled(image, in_repository=outcome.in_repository, changed=outcome.changed,
                            refused=outcome.refused, now=self.clock())  # fmt: skip
        if outcome.registered:
            await self._record_image(stores, image, set(outcome.registered), outcome.registered)

    def _report_round(self, image: str, outcome: RoundOutcome) -> None:
        self.counts.registered += len(outcome.registered)
        if outcome.not_in_catalog:
            self.log.warning("imageArchived named files the catalog does not hold; not "
                             "registered", image=image,
                             sensors=",".join(outcome.not_in_catalog))  # fmt: skip
        for sensor, reason in outcome.refused.items():
            self.counts.last_error = f"{image} {sensor}: {reason}"[:1000]
            self.log.warning("file refused by the repository; retried later", image=image,
                             sensor=sensor, reason=reason)  # fmt: skip
        if outcome.registered:
            self.log.info("registered", image=image, sensors=",".join(sorted(outcome.registered)),
                          changed=",".join(sorted(outcome.changed)))  # fmt: skip

    async def _unavailable(self, code: int, reason: str, image: str) -> float:
        """A store or the catalog failed: everything waits a back-off delay."""
        delay = self._outage.next_delay()
        self._held_until = self.clock() + delay
        self.counts.last_error = reason[:1000]
        self.log.warning("cannot register now; retried later", image=image, reason=reason,
                         retry_in=round(delay, 1))  # fmt: skip
        if code not in self._down:
            self._down.add(code)
            await self.report_error(code, reason[:2000])
        return self._held_until

    def _recovered(self, *codes: int) -> None:
        for code in codes:
            if code in self._down:
                self._down.discard(code)
                self.log.info("working again", errorCode=code)
        if not self._down:
            self._outage.reset()

    def _event(self, stores: Stores, said: Announcement) -> ImageInOods:
        refused = [f"{sensor}: {peer_text(reason, _REASON)}" for sensor, reason in said.refused]
        if refused:
            listed = "; ".join(refused[:_LISTED])
            more = f"; and {len(refused) - _LISTED} more" if len(refused) > _LISTED else ""
            code, description = STATUS_FILES_REFUSED, f"refused, retried: {listed}{more}"
        else:
            code = STATUS_REGISTERED
            description = f"{len(said.sensors)} file(s) in the repository"
        return ImageInOods(
            imageName=said.image, instrument=self.instrument,
            exposureId=stores.registrar.registry.exposure_id(said.image),
            sensors=",".join(said.sensors)[:2000], statusCode=code,
            description=description[:4000],
        )  # fmt: skip

    # ---- ConsDB ------------------------------------------------------------------------

    async def _record_image(
        self,
        stores: Stores,
        image: str,
        sensors: set[str],
        headers: Mapping[str, Mapping[str, Any]] | None,
    ) -> None:
        """The image's exposure and ccdexposure rows from these files' headers (read
        again when retried)."""
        key = ("image", image)
        try:
            if headers is None:
                headers = await asyncio.to_thread(stores.registrar.headers_of, image, sensors)
            readable = {sensor: header for sensor, header in headers.items() if header}
            if readable:
                warnings = await asyncio.to_thread(
                    stores.consdb.record_image, self.instrument, readable
                )
                self._warn(image, "header", warnings)
        except (StoreUnavailableError, CatalogError, OSError) as exc:
            await self._consdb_failed(key, sensors, f"ConsDB rows of {image}: {exc}")
            return
        self.consdb_retries.succeeded(key)
        self._recovered(ERROR_CONSDB_UNAVAILABLE)

    async def _record_quicklook(self, stores: Stores, image: str) -> None:
        key = ("quicklook", image)
        try:
            qc = await asyncio.to_thread(BatchRecords(stores.registrar.catalog).qc_of, image)
            if qc:
                warnings = await asyncio.to_thread(
                    stores.consdb.record_quicklook, self.instrument, image, qc
                )
                self._warn(image, "quick-look", warnings)
            else:
                self.log.warning("QC announced for an image the catalog has no QC of; "
                                 "nothing recorded", image=image)  # fmt: skip
        except (StoreUnavailableError, CatalogError) as exc:
            await self._consdb_failed(key, set(), f"quick-look QC of {image}: {exc}")
            return
        self.consdb_retries.succeeded(key)
        self._recovered(ERROR_CONSDB_UNAVAILABLE)

    def _warn(self, image: str, what: str, warnings: Sequence[str]) -> None:
        """What ConsDB left out of the image's rows, said once per recording."""
        if warnings:
            self.log.warning(f"ConsDB {what} values left out", image=image,
                             warnings=peer_text("; ".join(warnings), 2000))  # fmt: skip

    async def _consdb_failed(self, key: tuple[str, str], sensors: set[str], reason: str) -> None:
        self.counts.last_error = reason[:1000]
        for kind, image in self.consdb_retries.failed(key, sensors, self.clock()):
            self.log.error("too many ConsDB rows waiting: left to the next reconciliation",
                           kind=kind, image=image)  # fmt: skip
        self.log.warning("ConsDB refused or failed; retried later", reason=reason)
        if ERROR_CONSDB_UNAVAILABLE not in self._down:
            self._down.add(ERROR_CONSDB_UNAVAILABLE)
            await self.report_error(ERROR_CONSDB_UNAVAILABLE, reason[:2000])

    def quicklook_heard(self, image: str) -> None:
        self.quicklook[image] = None
        self.quicklook.move_to_end(image)
        while len(self.quicklook) > _QC_WAITING:
            dropped, _ = self.quicklook.popitem(last=False)
            self.log.error("too many quick-look records waiting: left to the next "
                           "reconciliation", image=dropped)  # fmt: skip
        self.wake.set()
