"""The open pages' event streams: one queue of frames per page, bounded in bytes.

A page that stops reading must not hold the dashboard's memory or its shutdown. Each
page may have at most ``bytes_per_page`` waiting (its first frame, the snapshot,
included); a frame that would take it beyond ends that page's stream: its queued frames
are dropped at once (the memory is released while the page is still connected) and the
page reconnects to a fresh snapshot when it reads again. At most ``max_pages`` pages are
open at once: one more is refused (:class:`TooManyPagesError`), so the memory of every
stream together stays below ``max_pages * bytes_per_page``.

Pure asyncio data (no socket): what a page is sent is :meth:`PageStreams.frames`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable

__all__ = ["PageQueue", "PageStreams", "TooManyPagesError"]


class TooManyPagesError(RuntimeError):
    """Every page slot is taken."""


class PageQueue:
    """What one page has yet to be sent, and how many bytes that is."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0  # bytes queued, not yet handed to the page's socket
        self.ended = False
        self.on_drop: Callable[[], None] | None = None  # e.g. abort the page's connection
        self.connected: Callable[[], bool] = lambda: True  # False once the page has gone
        self._frames: collections.deque[bytes] = collections.deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._frames)

    def offer(self, frame: bytes) -> bool:
        """Queue ``frame``; False (nothing queued) if it would take the page past its
        limit."""
        if self.ended or self.waiting + len(frame) > self.limit:
            return False
        self._frames.append(frame)
        self.waiting += len(frame)
        self._ready.set()
        return True

    def end(self) -> None:
        """No more frames: what was queued is dropped (its memory freed now)."""
        self.ended = True
        self._frames.clear()
        self.waiting = 0
        self._ready.set()

    def drop(self) -> None:
        """End it for being too far behind: a page stuck in a write would never read the
        end, so ``on_drop`` (its connection's abort) is called too."""
        self.end()
        on_drop, self.on_drop = self.on_drop, None
        if on_drop is not None:
            on_drop()

    async def next(self) -> bytes | None:
        """The next frame, or None once the stream has ended."""
        while not self._frames:
            if self.ended:
                return None
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self.waiting -= len(frame)
        return frame


class PageStreams:
    def __init__(self, bytes_per_page: int, max_pages: int) -> None:
        self.bytes_per_page = bytes_per_page
        self.max_pages = max_pages
        self.dropped = 0  # pages whose stream was ended for being too far behind
        self._queues: set[PageQueue] = set()

    def __len__(self) -> int:
        return len(self._queues)

    def open(self, first: bytes) -> PageQueue:
        """A new page's queue, its first frame (the snapshot) already in it;
        TooManyPagesError when every slot is taken."""
        if len(self._queues) >= self.max_pages:
            raise TooManyPagesError(f"{self.max_pages} pages are open already")
        queue = PageQueue(max(self.bytes_per_page, len(first)))
        queue.offer(first)
        queue.limit = self.bytes_per_page  # the snapshot may fill it; the next frames wait
        self._queues.add(queue)
        return queue

    async def frames(self, queue: PageQueue) -> AsyncIterator[bytes]:
        """What the page is to be sent, until its stream is ended; then it is closed."""
        try:
            while (frame := await queue.next()) is not None:
                yield frame
        finally:
            self.close(queue)

    def close(self, queue: PageQueue) -> None:
        """The page left (or is to be dropped): its slot and its memory are freed."""
        self._queues.discard(queue)
        queue.end()

    def broadcast(self, frame: bytes) -> None:
        for queue in list(self._queues):
            if not queue.offer(frame):  # this far behind: it starts again from a snapshot
                self.dropped += 1
                self._queues.discard(queue)
                queue.drop()

    def drop_departed(self) -> int:
        """Drop the pages whose connection has gone (a writer stuck on a page that
        closed may never learn it by itself); how many."""
        departed = [queue for queue in self._queues if not queue.connected()]
        for queue in departed:
            self._queues.discard(queue)
            queue.drop()
        return len(departed)

    def end_all(self) -> None:
        for queue in list(self._queues):
            self.close(queue)

    def waiting_bytes(self) -> int:
        """Bytes queued for every open page together."""
        return sum(queue.waiting for queue in self._queues)

    def queues(self) -> tuple[PageQueue, ...]:
        """The open pages' queues (what each has yet to be sent), for tests and status."""
        return tuple(self._queues)
