"""Files archived without their header, or with an incomplete one, completed once a
better one comes.

An image whose header had not come within ``header_timeout`` is archived without it
(``statusCode`` 1), so the pixels are safe while the header service is down. When the
header is announced later — heard on the bus, or found by catch-up — each such file is
read back and rewritten with it, replacing its catalog row. The same for a file whose
header lacked keywords, when one lacking only some of them comes (a header rebuilt
from the EFD, ``HDRSRC = 'EFD'``: :func:`improves`). One completion per image at
a time, however many of its sensors ask, catch-up included (each file's row read again,
and judged again, just before its rewrite); a sensor being archived or completed already
is left alone (the in-flight set is the CSC's, shared with archiving).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from structlog.typing import FilteringBoundLogger

from cscs.archiver.headers import Header, HeaderSource
from cscs.archiver.interface import ERROR_ARCHIVE_UNWRITABLE, ERROR_CATALOG
from cscs.archiver.store import ArchiveStore, ArchiveUnwritableError
from cscs.catalog import ArchivedFile, CatalogError
from cscs.core.tasks import Jobs
from cscs.daq.reader import SensorPixels

__all__ = ["HeaderCompletion", "improves"]

#: Write a file again, now with its header, and say so (``imageArchived``).
Rewrite = Callable[[ArchiveStore, SensorPixels, Header], Awaitable[None]]
#: Go to FAULT with (``errorCode``, report), from inside a job.
Fatal = Callable[[int, str], None]
#: What an unexpected failure (a bug) of an image's job comes to: (image, exception).
Failed = Callable[[str, BaseException], Awaitable[None]]


def improves(row: ArchivedFile, header: Header) -> bool:
    """Whether ``header`` should replace the one the file ``row`` was archived with:
    always when it has none; else only when the keywords it lacks are a strict subset
    of those the file's lacks. Fewer is not enough (one missing {A} over one missing
    {B, C} would drop the file's value of A), nor is an equal set (a header is never
    swapped for one no better, nor written again for nothing)."""
    if not row.header_url:
        return True
    if row.header_md5 == header.md5:
        return False
    before = {k for k in row.missing_keywords.split(",") if k}
    return {k for k in header.missing.split(",") if k} < before


class HeaderCompletion:
    """Completes an image's files archived without their header, in a job of the CSC's
    (cancelled with its other archive jobs when it stops archiving)."""

    def __init__(
        self,
        *,
        store: Callable[[], ArchiveStore],
        headers: HeaderSource,
        in_flight: set[tuple[str, str]],
        rewrite: Rewrite,
        header_wait: Callable[[], float],
        jobs: Jobs,
        log: FilteringBoundLogger,
        fatal: Fatal,
        failed: Failed,
    ) -> None:
        # Getters, not values: the store and the configuration change on each ``start``.
        self._store = store
        self._headers = headers
        self._in_flight = in_flight
        self._rewrite = rewrite
        self._header_wait = header_wait
        self._jobs = jobs
        self._log = log
        self._fatal = fatal
        self._failed = failed
        self._completing: set[str] = set()
        # One completion of an image at a time, whoever asks (``soon`` or catch-up):
        # two at once would each rewrite with the header they read, the older last.
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def soon(self, image: str) -> None:
        """Complete ``image``'s files with its header in a job of its own (one per image
        at a time, however many sensors ask)."""
        if image in self._completing:
            return
        self._completing.add(image)

        async def complete() -> None:
            try:
                await self.complete(image)
            finally:
                self._completing.discard(image)

        self._jobs.spawn(
            complete(), f"header-{image}", on_error=lambda exc: self._failed(image, exc)
        )

    async def complete(self, image: str) -> None:
        """Rewrite files archived without their header, now that it has come, or with
        an incomplete one, now that a better one has (:func:`improves`); after any
        completion of the same image under way (the lock is dropped when unused)."""
        lock = self._locks.setdefault(image, asyncio.Lock())
        self._users[image] = self._users.get(image, 0) + 1
        try:
            async with lock:
                await self._complete(image)
        finally:
            self._users[image] -= 1
            if not self._users[image]:
                del self._users[image], self._locks[image]

    async def _complete(self, image: str) -> None:
        store = self._store()
        try:
            rows = [
                r for r in await asyncio.to_thread(store.files_of, image) if not r.header_complete
            ]
            header = await self._headers.get(image, wait=self._header_wait()) if rows else None
            if header is None:  # nothing to complete, or no usable header after all
                return
            for row in rows:
                if not improves(row, header):
                    continue
                key = (image, row.sensor)
                if key in self._in_flight:
                    continue
                self._in_flight.add(key)
                try:
                    # Read again just before: the file may have been rewritten since.
                    now = await asyncio.to_thread(store.files_of, image)
                    current = next((r for r in now if r.sensor == row.sensor), None)
                    if current is None or not improves(current, header):
                        continue
                    pixels = await asyncio.to_thread(store.read_back, current)
                except OSError as exc:  # moved or damaged since: say so, do the others
                    self._log.error("cannot read back a file to add its header", path=row.path,
                                    error=str(exc))  # fmt: skip
                    continue
                else:
                    self._log.info("completing a file with its header", image=image,
                                   sensor=row.sensor)  # fmt: skip
                    await self._rewrite(store, pixels, header)
                finally:
                    self._in_flight.discard(key)
        except CatalogError as exc:
            self._fatal(ERROR_CATALOG, str(exc))
        except ArchiveUnwritableError as exc:
            self._fatal(ERROR_ARCHIVE_UNWRITABLE, str(exc))
