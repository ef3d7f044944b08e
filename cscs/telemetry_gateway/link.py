"""The gateway's link to the OCS side: store and forward.

Everything the gateway forwards (``imageQuality``, ``processingStatus``, ``alarm``)
goes into the durable queue (:mod:`cscs.telemetry_gateway.outbox`) with its final
``seq``, and a sender publishes the queue's head in order, taking each message out only
once the broker has it (QoS 1). While the OCS side is unreachable, or the CSC is not
ENABLED (the OCS has silenced it), the queue grows on disk; when it returns the queue
drains in the original order; a gateway restarted in between sends what it had queued.
``linkStatus`` (retained) says whether the link is up, how many messages wait and since
when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from cscs.core.publisher import stamp
from cscs.core.schema import EventSpec, Payload
from cscs.core.tai import current_tai
from cscs.telemetry_gateway.interface import LinkStatus
from cscs.telemetry_gateway.outbox import Outbox

__all__ = ["OcsLink", "Publish"]

#: Publish a queued message to the OCS side at QoS 1: (topic, payload, seconds to ride
#: out an outage); False if the broker did not have it by then.
Publish = Callable[[str, bytes, float], Awaitable[bool]]

_BATCH = 200  # messages read from the queue at a time
_RETRY = 5.0  # s a publish rides out an outage before the sender looks again
_PAUSE = 0.5  # s after a failed publish: a connection failing fast is not a busy loop


class OcsLink:
    """The queue and its sender. What it needs of the CSC it speaks for comes as
    callables, so it can neither reach nor change anything else of it."""

    def __init__(
        self,
        *,
        topic: Callable[[str], str],
        publish: Publish,
        bus_connected: Callable[[], bool],
        say: Callable[[LinkStatus], Awaitable[bool]],
        overflowed: Callable[[int | None], Awaitable[None]],
        log: FilteringBoundLogger,
    ) -> None:
        """``topic``: an event's topic, from its name; ``bus_connected``: the OCS side's
        connection is up now; ``say``: publish ``linkStatus``; ``overflowed``: messages
        were dropped for room (how many; None: there is room again)."""
        self._topic = topic
        self._publish = publish
        self._bus_connected = bus_connected
        self._say = say
        self._overflowed = overflowed
        self._log = log
        self.outbox: Outbox | None = None
        self.connected = False  # as the sender last found it
        self.dropped = 0  # for room, since the queue was made
        self._wake = asyncio.Event()
        self.sending = asyncio.Event()  # set while the CSC is ENABLED: a disabled one holds
        self._queueing = asyncio.Lock()  # puts in the order they were asked for
        self._overflowing = False
        self._said: tuple[bool, int] | None = None  # the last linkStatus's (connected, queued)

    async def open(self, path: Path, capacity: int) -> None:
        """The queue at ``path`` (what a previous run left in it is sent first)."""
        if self.outbox is None:
            self.outbox = await asyncio.to_thread(Outbox, path, capacity)
            # Drops a previous run counted are its own (and were alarmed then).
            self.dropped = (await asyncio.to_thread(self.outbox.status))[2]
        self.outbox.capacity = capacity
        self._wake.set()

    async def close(self) -> None:
        if self.outbox is not None:
            await asyncio.to_thread(self.outbox.close)
            self.outbox = None

    async def send(
        self,
        spec: EventSpec[Payload],
        payload: Payload,
        *,
        droppable: bool,
        received: bytes | None = None,
    ) -> bool:
        """Queue an event for the OCS side; it is on disk when this returns True.
        False: ``received``, the key of the DM message it comes from, was taken before
        (a redelivery), and nothing was queued."""
        outbox = self.outbox
        if outbox is None:
            raise RuntimeError("the link to the OCS side is not open (the CSC is not started)")
        topic = self._topic(spec.name)
        async with self._queueing:
            queued = await asyncio.to_thread(
                outbox.put, topic, lambda seq: stamp(payload, seq, current_tai()), droppable,
                current_tai(), received,
            )  # fmt: skip
        if queued is None:
            return False
        if queued[1]:
            self._log.warning("the queue to the OCS side is full: oldest dropped",
                                 dropped=queued[1])  # fmt: skip
        self._wake.set()
        return True

    async def forward(self) -> None:
        """Publish the queue's head, in order, for as long as the CSC runs."""
        while True:
            await self.sending.wait()
            outbox = self.outbox
            batch = await asyncio.to_thread(outbox.peek, _BATCH) if outbox else []
            if not batch:
                self._wake.clear()
                if outbox is None or not await asyncio.to_thread(outbox.peek, 1):
                    await self._wake.wait()
                continue
            for message in batch:
                if not self.sending.is_set():
                    break
                sent = await self._publish(message.topic, message.payload, _RETRY)
                if sent != self.connected:
                    self.connected = sent
                    if sent:  # say at once what waits, before it drains
                        self._log.info("the OCS side is reachable: sending what waits")
                        await self.report()
                    else:
                        self._log.warning("the OCS side is unreachable: queueing on disk")
                if not sent:
                    await asyncio.sleep(_PAUSE)  # then look again, from the same message
                    break
                await asyncio.to_thread(outbox.remove, message.id)  # type: ignore[union-attr]

    async def watch(self, interval: float) -> None:
        """:meth:`report` every ``interval``."""
        while True:
            await asyncio.sleep(interval)
            await self.report()

    async def report(self) -> None:
        """``linkStatus`` if the link or the queue changed since it was last said (it
        can only be said while the link is up: the first after an outage shows what
        waited, and since when); the alarm that says how many metrics a full queue
        dropped."""
        if self.outbox is None:
            return
        queued, oldest, dropped = await asyncio.to_thread(self.outbox.status)
        if dropped > self.dropped:
            self.dropped, self._overflowing = dropped, True
            await self._overflowed(dropped)
        elif self._overflowing and queued < self.outbox.capacity:
            self._overflowing = False  # room again: the alarm clears (stale until seen)
            await self._overflowed(None)
        up = self._bus_connected() and (self.connected or not queued)
        if up and (up, queued) != self._said:
            status = LinkStatus(connected=True, queued=queued, oldestQueued_tai=oldest)
            if await self._say(status):
                self._said = (True, queued)
        elif not up:
            self._said = (False, queued)
