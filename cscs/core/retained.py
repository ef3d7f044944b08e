"""A CSC's retained events are its own: what it does when someone else publishes on them.

Anyone on the bus can publish a retained ``summaryState`` FAULT, or an ``errorCode``, on
another CSC's topics, and every monitor that starts later would believe it. Broker ACLs
stop that at a site (``docs/security.md``); without them, each CSC watches its own retained
event topics and, when a message arrives there live that is not what it last published,
publishes its own again — or, for a retained topic it has published nothing on, clears
the retained message (an empty retained payload). Corrections are rate-limited per topic,
so a flood of forgeries costs the CSC at most one publication per topic per interval;
a forgery heard within the interval is corrected when it ends (the last word on a
topic is always the CSC's own).

Retained messages replayed when the CSC subscribes are left alone: they may be its own
from before a restart, and the CSC's first publications replace the ones that matter.
No I/O here: :class:`RetainedGuard` decides, the CSC publishes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from cscs.core.publisher import Publisher
from cscs.core.transport import Message, Subscription, Transport

__all__ = ["Correction", "RetainedGuard"]

CORRECTION_INTERVAL = 1.0  # s: at most one correction per topic this often
_MERGED = 1_000  # messages heard and not yet judged (each subscription bounds its own too)


async def _forward(subscription: Subscription, into: asyncio.Queue[Message]) -> None:
    while True:
        await into.put(await subscription.get())


@dataclass(frozen=True)
class Correction:
    """Publish ``payload`` retained on ``topic`` (empty: clear the retained message)."""

    topic: str
    payload: bytes
    foreign: bytes  # what was heard, for the log (truncated)


class RetainedGuard:
    """Decides which messages heard on a CSC's own event topics must be corrected."""

    def __init__(
        self, retained_topics: set[str], own: Publisher, interval: float = CORRECTION_INTERVAL
    ) -> None:
        self.topics = frozenset(retained_topics)
        self._own = own
        self._interval = interval
        self._last: dict[str, float] = {}
        self._deferred: dict[str, float] = {}  # topic -> when its correction is due
        self.corrections = 0
        self.suppressed = 0

    def check(self, message: Message, now: float) -> Correction | None:
        """What to publish in answer to ``message`` heard on our own topics, if anything."""
        if message.retain or message.topic not in self.topics:
            return None  # replayed from before we listened, or not a retained event
        if self._own.published_recently(message.topic, message.payload):
            return None  # our own publication
        ours = self._own.latest(message.topic)
        if ours is None and not message.payload:
            return None  # nothing of ours there, and already cleared
        last = self._last.get(message.topic)
        if last is not None and now - last < self._interval:
            self.suppressed += 1
            self._deferred[message.topic] = last + self._interval
            return None
        self._deferred.pop(message.topic, None)
        self._last[message.topic] = now
        self.corrections += 1
        return Correction(message.topic, ours or b"", message.payload[:200])

    def next_due(self) -> float | None:
        """When the earliest deferred correction is due (monotonic time), if any."""
        return min(self._deferred.values(), default=None)

    def due(self, now: float) -> list[Correction]:
        """The deferred corrections due by ``now`` (each topic's latest forgery)."""
        topics = [t for t, when in self._deferred.items() if when <= now]
        corrections = []
        for topic in topics:
            del self._deferred[topic]
            self._last[topic] = now
            self.corrections += 1
            corrections.append(Correction(topic, self._own.latest(topic) or b"", b"(deferred)"))
        return corrections

    async def subscribe(self, bus: Transport) -> list[Subscription]:
        """What :meth:`watch` hears: each of :attr:`topics`, not every event of ours, so
        that the broker does not send back each ``imageArchived`` and its like."""
        return [await bus.subscribe(topic, maxsize=1_000) for topic in sorted(self.topics)]

    async def watch(
        self, heard: Sequence[Subscription], bus: Transport, log: FilteringBoundLogger
    ) -> None:
        """Correct, on ``bus``, what is heard on our own retained topics (``heard``:
        :meth:`subscribe`'s), and the deferred corrections when they are due."""
        merged: asyncio.Queue[Message] = asyncio.Queue(maxsize=_MERGED)
        async with asyncio.TaskGroup() as forwarding:
            for subscription in heard:
                forwarding.create_task(_forward(subscription, merged))
            while True:
                due = self.next_due()
                timeout = None if due is None else max(0.0, due - time.monotonic())
                try:
                    async with asyncio.timeout(timeout):
                        message = await merged.get()
                except TimeoutError:
                    for correction in self.due(time.monotonic()):
                        await self._publish(correction, bus, log)
                    continue
                answer = self.check(message, time.monotonic())
                if answer is not None:
                    await self._publish(answer, bus, log)

    async def _publish(
        self, correction: Correction, bus: Transport, log: FilteringBoundLogger
    ) -> None:
        log.warning(
            "someone else published on this CSC's retained topic; publishing ours again",
            topic=correction.topic, heard=correction.foreign.decode(errors="replace"),
            cleared=not correction.payload, suppressed=self.suppressed,
        )  # fmt: skip
        await bus.publish(correction.topic, correction.payload, retain=True, wait=5.0)
