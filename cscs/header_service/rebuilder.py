"""When the header service rebuilds headers from the EFD, in the background.

Three triggers: at ``enable``, every image of the camera started since the service's
last header (or ``rebuild_lookback`` if it has none) that has no document or one with
missing keywords; a live header that came out incomplete, once, ``rebuild_delay`` later
(a service that has just restarted had an empty cache, and the EFD heard what it did
not); and the command ``rebuildHeaders``. An image whose end is not in the EFD yet (the
writer writes in batches) is tried again ``rebuild_delay`` later, a few times.

Nothing here blocks the live path: the store is read and the documents written in one
worker thread of the rebuilder's own (one at a time: an EFD query of a night costs
seconds, and the live headers come first), and each background pass is a job of the
CSC's, logged, bounded (pages of :data:`MAX_SCANNED` raw records on a cursor,
:data:`MAX_PAGES` a pass, :data:`MAX_WAITING` waiting for a retry).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from structlog.typing import FilteringBoundLogger

from cscs.camera.files import PathEscapeError
from cscs.camera.naming import ImageName
from cscs.core.tai import current_tai
from cscs.core.tasks import Jobs
from cscs.efd.open import open_store
from cscs.efd.store import EfdStore, EfdStoreError
from cscs.header_service.rebuild import Cursor, EfdHeaders, Outcome, Start

__all__ = ["MAX_SCANNED", "RebuildSettings", "Rebuilder", "summary"]

MAX_SCANNED = 1000  # raw startIntegration records a page of the pass at enable reads
MAX_PAGES = 30  # pages a pass looks at: a month of nights
MAX_WAITING = 1000  # images waiting for a later attempt
RETRIES = 3  # later attempts of an image whose end is not in the EFD yet
_SINCE_MARGIN = 600.0  # s before the last header: exposures open when it was written
T = TypeVar("T")

_SAID = {
    "rebuilt": "rebuilt",
    "complete": "already complete",
    "unchanged": "unchanged (the EFD lacks what they lack)",
    "not-in-efd": "not in the EFD",
    "not-ended": "not ended in the EFD (yet)",
    "live": "being collected live",
    "unusable": "failed",
}


def summary(counts: Counter[str]) -> str:
    """The command's result: how many of each outcome."""
    return ", ".join(f"{counts.get(k, 0)} {said}" for k, said in _SAID.items())


@dataclass(frozen=True)
class RebuildSettings:
    """What a rebuild needs from the CSC's configuration (set on each ``start``)."""

    make: Callable[[EfdStore], EfdHeaders]
    delay: float  # s before a later attempt
    lookback: float  # s looked back at enable when the service has no header yet


class Rebuilder:
    def __init__(
        self,
        efd_url: str,
        *,
        jobs: Jobs,
        log: FilteringBoundLogger,
        announce: Callable[[Outcome], Awaitable[None]],
        busy: Callable[[str], bool],
    ) -> None:
        self.efd_url = efd_url
        self.open_efd: Callable[[], EfdStore] = lambda: open_store(efd_url)
        """How the EFD is opened (in the worker thread, once): a test gives its own."""
        self.settings: RebuildSettings | None = None
        self._jobs = jobs
        self._log = log
        self._announce = announce
        self._busy = busy  # an image being collected live
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="efd-rebuild")
        self._store: EfdStore | None = None
        self._waiting: set[str] = set()

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            self._thread.submit(store.close)
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _headers(self) -> EfdHeaders:
        """In the worker thread: the store opened once, the configuration's rules."""
        if self.settings is None:
            raise EfdStoreError("the header service is not configured yet")
        if self._store is None:
            self._store = self.open_efd()
        return self.settings.make(self._store)

    def _rebuild(self, image: str, known: Start | None) -> Outcome:
        return self._headers().rebuild(image, known)

    # ---- one image --------------------------------------------------------------------

    async def one(self, image: str, known: Start | None = None) -> Outcome:
        """Rebuild ``image`` (not while it is being collected live) and announce it;
        EfdStoreError if the EFD cannot be read. A document kept as it is (complete, or
        as good as the EFD can make it) is not announced again."""
        if self._busy(image):
            return Outcome(image, "live", "being collected live")
        try:
            outcome = await self._call(self._rebuild, image, known)
        except (OSError, PathEscapeError) as exc:
            self._log.error("cannot write a rebuilt header", image=image, error=str(exc))
            return Outcome(image, "unusable", str(exc))
        if outcome.status == "rebuilt":
            self._log.info("header rebuilt from the EFD", image=image, missing=outcome.detail)
            await self._announce(outcome)
        return outcome

    async def images(self, images: list[str]) -> Counter[str]:
        """The command: each image of one dayObs; EfdStoreError if the EFD cannot be read."""
        day = ImageName.parse(images[0]).day_obs
        starts = await self._call(lambda: self._headers().starts_of_day(day))
        counts: Counter[str] = Counter()
        for image in images:
            start = starts.get(image)
            if start is None:
                counts["not-in-efd"] += 1
                continue
            counts[(await self.one(image, start)).status] += 1
        return counts

    # ---- in the background ------------------------------------------------------------

    def since_last_header(self) -> None:
        """Rebuild, in a job, what was taken since this service's last header."""
        self._jobs.spawn(self._since_last(), "rebuild-at-enable", on_error=self._failed)

    def later(self, image: str, attempts: int = RETRIES) -> None:
        """Try ``image`` again ``delay`` from now, in a job (at most :data:`MAX_WAITING`
        waiting at once; beyond, a warning and the image is left to the command)."""
        if image in self._waiting:
            return
        if len(self._waiting) >= MAX_WAITING:
            self._log.warning("too many headers waiting for a rebuild; not retried", image=image)
            return
        self._waiting.add(image)
        self._jobs.spawn(self._later(image, attempts), f"rebuild-{image}", on_error=self._failed)

    async def _failed(self, exc: BaseException) -> None:
        self._log.error("a header rebuild failed unexpectedly", error=repr(exc))

    async def _later(self, image: str, attempts: int) -> None:
        try:
            await asyncio.sleep(self.settings.delay if self.settings else 5.0)
        finally:
            self._waiting.discard(image)
        outcome = await self._quietly(image)
        if outcome is not None and outcome.status == "not-ended" and attempts > 1:
            self.later(image, attempts - 1)

    async def _quietly(self, image: str, known: Start | None = None) -> Outcome | None:
        try:
            return await self.one(image, known)
        except EfdStoreError as exc:
            self._log.warning("cannot rebuild a header: the EFD is unreadable", image=image,
                              efd=self.efd_url, error=str(exc))  # fmt: skip
            return None

    async def _since_last(self) -> None:
        """Every image started since the last header, a page of :data:`MAX_SCANNED` at a
        time (oldest first), at most :data:`MAX_PAGES` pages."""
        settings = self.settings
        if settings is None:
            return
        now = current_tai()

        def since() -> float:
            last = self._headers().last_header_time()
            return last - _SINCE_MARGIN if last is not None else now - settings.lookback

        seen: set[str] = set()
        counts: Counter[str] = Counter()
        cursor: Cursor | None = None
        try:
            begin = await self._call(since)
            for _ in range(MAX_PAGES):
                page, cursor = await self._call(
                    lambda c=cursor: self._headers().start_page(begin, now, MAX_SCANNED, c)
                )
                new = [(image, start) for image, start in page.items() if image not in seen]
                seen.update(image for image, _ in new)
                counts += await self._each(new)
                if cursor is None:
                    break
            else:
                self._log.warning("the rebuild since the last header stopped at its page cap: "
                                  "images after it are rebuilt only when asked",
                                  pages=MAX_PAGES, records=MAX_SCANNED,
                                  last_sent_tai=cursor[0] if cursor else None)  # fmt: skip
        except EfdStoreError as exc:
            self._log.warning("headers not rebuilt: the EFD is unreadable",
                              efd=self.efd_url, error=str(exc))  # fmt: skip
        if counts.get("rebuilt") or counts.get("not-ended"):
            self._log.info("headers rebuilt since the last one", images=len(seen),
                           result=summary(counts))  # fmt: skip

    async def _each(self, starts: Iterable[tuple[str, Start]]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for image, start in starts:
            outcome = await self._quietly(image, start)
            if outcome is None:
                break  # the EFD is unreadable: said once, the rest left for later
            counts[outcome.status] += 1
            if outcome.status == "not-ended":
                self.later(image)
        return counts
