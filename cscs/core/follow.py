"""Hearing other CSCs: each subscription read by a task of its own, every message decoded
(and, for a declared topic, validated) before a handler sees it, and nothing left
running when the CSC stops listening.

Anyone on the bus can publish anything on any topic, so a message that is not JSON, or
not what its declaration says, is logged with the reason and skipped; it never reaches
the handler and never ends the listening. A handler that fails on a message (a bug, or
an input nobody foresaw) has that message dropped, logged with the traceback; the
messages after it are still handled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from structlog.typing import FilteringBoundLogger

from cscs.core.remote import Parsed, Received
from cscs.core.schema import EventSpec, Payload, TelemetrySpec
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress
from cscs.core.transport import Subscription, Transport

__all__ = ["Followers", "Listener", "on"]

P = TypeVar("P", bound=Payload)
_QUEUE = 100_000  # messages a handler may fall behind by before they are dropped


@dataclass(frozen=True)
class Listener(Generic[P]):
    """A declared event and what to do with each one heard."""

    spec: EventSpec[P]
    handler: Callable[[Parsed[P]], None]


def on(spec: EventSpec[P], handler: Callable[[Parsed[P]], None]) -> Listener[P]:
    """Pair an event with its handler; the type checker matches them (as ``bind`` does
    for commands)."""
    return Listener(spec, handler)


class Followers:
    """The topics one CSC, or one part of it, follows. :meth:`close` releases what was
    followed through this one and nothing else, so a part that follows anew (the
    gateway's health watch, on each ``start``) holds its own."""

    def __init__(self, log: FilteringBoundLogger, name: str) -> None:
        self._log = log
        self._name = name
        self._followed: list[tuple[Subscription, asyncio.Task[None]]] = []

    async def parsed(
        self,
        bus: Transport,
        address: CscAddress,
        spec: EventSpec[P] | TelemetrySpec[P],
        handler: Callable[[Parsed[P]], None],
    ) -> None:
        """Hand ``handler`` every ``spec`` message of ``address``, validated."""

        def parse(received: Received) -> None:
            self._deliver(received, spec, handler)

        await self.raw(bus, spec.topic(address), parse)

    async def events(
        self, bus: Transport, address: CscAddress, listeners: Sequence[Listener[Any]]
    ) -> None:
        """Hand each listener its events of ``address``, in the order they were published:
        one subscription for all of them (separate ones would each have a reader, and a
        later event could be handled before an earlier one). Other events are ignored."""
        by_name = {listener.spec.name: listener for listener in listeners}

        def dispatch(received: Received) -> None:
            listener = by_name.get(received.name)
            if listener is not None:
                self._deliver(received, listener.spec, listener.handler)

        await self.raw(bus, address.event("+"), dispatch)

    def _deliver(
        self,
        received: Received,
        spec: EventSpec[P] | TelemetrySpec[P],
        handler: Callable[[Parsed[P]], None],
    ) -> None:
        try:
            parsed = received.parse(spec)
        except ValueError as exc:
            self._log.warning(f"ignored a malformed {spec.name}", sender=str(received.address),
                              error=str(exc))  # fmt: skip
            return
        handler(parsed)

    async def raw(self, bus: Transport, topic: str, handler: Callable[[Received], None]) -> None:
        """Hand ``handler`` every message on ``topic`` (wildcards allowed), JSON-decoded."""
        subscription = await bus.subscribe(topic, maxsize=_QUEUE)
        task = asyncio.create_task(
            self._read(subscription, handler), name=f"{self._name}-follow-{topic}"
        )
        self._followed.append((subscription, task))

    async def close(self, bus: Transport | None) -> None:
        """Stop hearing everything followed so far."""
        followed, self._followed = self._followed, []
        await cancel_and_wait([task for _, task in followed], self._log, "unfollowing")
        if bus is not None:
            for subscription, _ in followed:
                bus.unsubscribe(subscription)

    async def _read(self, subscription: Subscription, handler: Callable[[Received], None]) -> None:
        async for message in subscription:
            received = Received.from_message(message)
            if received is None:
                self._log.warning("ignored an unreadable message", topic=message.topic[:200])
                continue
            try:
                handler(received)
            except Exception as exc:
                self._log.error("a message could not be handled; dropped",
                                topic=message.topic, exc_info=exc)  # fmt: skip
