"""The open pages' event streams: one bounded queue of frames per page.

A page that stops reading must not hold the dashboard's memory or its shutdown: a queue
that fills ends that page's stream (the page reconnects and starts again from a
snapshot), and ending a full queue first makes room for the end marker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

__all__ = ["PageStreams"]

Queue = asyncio.Queue[bytes | None]


class PageStreams:
    def __init__(self, frames_per_page: int) -> None:
        self.frames_per_page = frames_per_page
        self._queues: set[Queue] = set()

    def __len__(self) -> int:
        return len(self._queues)

    def open(self, first: bytes) -> Queue:
        """A new page's queue, its first frame (the snapshot) already in it."""
        queue: Queue = asyncio.Queue(self.frames_per_page)
        queue.put_nowait(first)
        self._queues.add(queue)
        return queue

    async def frames(self, queue: Queue) -> AsyncIterator[bytes]:
        """What the page is to be sent, until its stream is ended; then it is closed."""
        try:
            while (frame := await queue.get()) is not None:
                yield frame
        finally:
            self._queues.discard(queue)

    def broadcast(self, frame: bytes) -> None:
        for queue in list(self._queues):
            if queue.full():  # a page this far behind starts again from a snapshot
                self._end(queue)
            else:
                queue.put_nowait(frame)

    def end_all(self) -> None:
        for queue in list(self._queues):
            self._end(queue)

    def queues(self) -> tuple[Queue, ...]:
        """The open pages' queues (what each has yet to be sent), for tests and status."""
        return tuple(self._queues)

    def _end(self, queue: Queue) -> None:
        self._queues.discard(queue)
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(None)
