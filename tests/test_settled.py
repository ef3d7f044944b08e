"""Issue 29, item 8, offline: before a deadline judges an event missing, the events
already delivered are taken first (:meth:`BaseTransport.settled`).

The connection here holds its packets as a socket does after a pause, and hands over one
per turn of the event loop, as aiomqtt reads them; the deadline is long past. Judged at
once, the end would be "missing"; settled first, it is found.
"""

from __future__ import annotations

import asyncio
from collections import deque

from cscs.core.transport import BaseTransport, Message


class _PausedConnection(BaseTransport):
    """Packets waiting unread, read one per turn of the loop once reading starts."""

    def __init__(self, topics: list[str]) -> None:
        super().__init__("paused", None, "test")
        self.unread = deque(Message(t, b"{}") for t in topics)

    def start_reading(self) -> None:
        asyncio.get_running_loop().call_soon(self._read_one)

    def _read_one(self) -> None:
        if self.unread:
            self._deliver(self.unread.popleft())
            asyncio.get_running_loop().call_soon(self._read_one)

    def _unread(self) -> bool:
        return bool(self.unread)


async def test_what_was_delivered_is_handled_before_the_deadline_judges() -> None:
    topics = [f"x/Telescope/1/tel/mount{i}" for i in range(50)] + ["x/Camera/1/evt/end"]
    connection = _PausedConnection(topics)
    subscription = connection._add_subscription("x/#", 0)  # noqa: SLF001
    handled: list[str] = []

    async def reader() -> None:  # a CSC's follower: each message handled as it is taken
        async for message in subscription:
            handled.append(message.topic)

    task = asyncio.create_task(reader())
    try:
        connection.start_reading()  # SIGCONT: the socket is readable, the timer long due
        judged_at_once = "x/Camera/1/evt/end" in handled
        assert await connection.settled(limit=5.0)
        assert not judged_at_once
        assert handled == topics  # all of it, in order, the end included
    finally:
        task.cancel()


async def test_a_reader_that_does_not_read_bounds_the_wait() -> None:
    connection = _PausedConnection(["x/a", "x/b"])
    connection._add_subscription("x/#", 0)  # noqa: SLF001  (nobody reads it)
    connection.start_reading()
    assert not await connection.settled(limit=0.05)
