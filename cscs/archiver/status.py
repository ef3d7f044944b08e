"""The archiver's ``archiverStatus`` telemetry: every 5 s, how many sensors are under
way, the bytes written over the last interval, the archive's free space and the files
archived since start — counted as files are written, published by :meth:`StatusReport.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sized

from cscs.archiver.interface import ArchiverStatus
from cscs.archiver.store import ArchiveStore

__all__ = ["STATUS_INTERVAL", "StatusReport"]

STATUS_INTERVAL = 5.0


class StatusReport:
    def __init__(
        self,
        publish: Callable[[ArchiverStatus], Awaitable[object]],
        store: Callable[[], ArchiveStore | None],
        in_flight: Sized,
    ) -> None:
        # A getter for the store: each ``start`` may open another.
        self._publish = publish
        self._store = store
        self._in_flight = in_flight
        self._archived = 0
        self._bytes_window = 0

    def written(self, byte_size: int, *, replacing: bool) -> None:
        """Count a file written; one rewritten with its header is no new file, but its
        bytes were written all the same."""
        self._archived += not replacing
        self._bytes_window += byte_size

    async def run(self) -> None:
        """Publish every ``STATUS_INTERVAL`` for as long as the CSC runs (free space 0
        when there is no archive yet or it cannot be asked)."""
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            rate, self._bytes_window = self._bytes_window / STATUS_INTERVAL, 0
            free = 0
            store = self._store()
            if store is not None:
                with contextlib.suppress(OSError):
                    free = await asyncio.to_thread(store.free_bytes)
            await self._publish(
                ArchiverStatus(queueDepth=len(self._in_flight), bytesPerSecond=rate,
                               freeBytes=free, imagesArchived=self._archived),
            )  # fmt: skip
