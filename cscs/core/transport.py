"""What a CSC needs from a message bus, and nothing about how a bus provides it.

Two implementations satisfy :class:`Transport`: :class:`cscs.core.bus.Bus`, over MQTT
(it and :mod:`cscs.core.aiomqtt_workarounds` are the only modules that talk to
``aiomqtt``), and the in-memory transport of :mod:`cscs.core.testing`, for tests of CSC
logic that need no broker. A :class:`Connector` makes transports:
:class:`cscs.core.broker_address.BrokerAddress` for a real broker,
:class:`cscs.core.testing.MemoryBroker` for the in-memory one.

The semantics both keep (what the CSCs rely on): QoS 1 publishes wait for the bus for a
bounded time, QoS 0 ones are dropped while disconnected; retained messages are replayed
to new subscriptions with ``retain`` set; ``+``/``#`` filters; the last will is
published for a client that vanishes without closing; ``on_connect`` runs after every
(re)connection, so retained state can be published again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, Self, TypedDict, Unpack

import structlog

from cscs.core.topics import check_filter, topic_matches

__all__ = [
    "BaseTransport",
    "BrokerRefusedError",
    "BrokerUnavailableError",
    "ConnectionState",
    "Connector",
    "Message",
    "OnConnect",
    "Subscription",
    "Transport",
    "TransportOptions",
    "Will",
]

_SETTLE_SPIN_TURNS = 100  # loop turns :meth:`Transport.settled` yields before it sleeps

OnConnect = Callable[[], Awaitable[None]]


class BrokerUnavailableError(ConnectionError):
    """The broker could not be reached (in time)."""


class BrokerRefusedError(BrokerUnavailableError):
    """The broker answered but will not have this client: its login, or its trust in
    the broker's certificate; retrying would not help."""


class ConnectionState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False
    ack: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)
    """Tell the broker the message is safe with us (a transport made with
    ``manual_ack``; otherwise a no-op, the transport has done it on receipt)."""


@dataclass(frozen=True)
class Will:
    """What the bus publishes for a client that vanishes without closing (ICD §3)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Subscription:
    """Messages matching one topic filter, queued for one reader.

    ``maxsize`` bounds the queue (0: unbounded); a message arriving at a full queue is
    counted in ``dropped`` and not kept, so a reader that falls behind costs memory
    only up to its bound.
    """

    def __init__(self, topic_filter: str, maxsize: int = 0) -> None:
        self.filter = check_filter(topic_filter)
        self._queue: asyncio.Queue[Message] = asyncio.Queue(maxsize)
        self.dropped = 0

    def matches(self, topic: str) -> bool:
        return topic_matches(self.filter, topic)

    def offer(self, message: Message) -> bool:
        """Queue it; False if the queue is full (it is then counted and not kept)."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    async def get(self, timeout: float | None = None) -> Message:
        async with asyncio.timeout(timeout):
            return await self._queue.get()

    @property
    def waiting(self) -> int:
        """Messages queued, not yet taken by the reader."""
        return self._queue.qsize()

    def get_nowait(self) -> Message | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            yield await self._queue.get()


class Transport(Protocol):
    """One client's connection to the bus, kept alive across outages.

    An async context manager: entering waits for the first connection (raising
    :class:`BrokerUnavailableError` after the connector's timeout); leaving closes it
    cleanly, so the last will is not sent.
    """

    client_id: str
    #: Sequence numbers of the commands this client sends (unique per origin, ICD §2).
    command_seqs: Iterator[int]
    on_connect: OnConnect | None

    @property
    def url(self) -> str:
        """Where the bus is, for messages a person reads."""
        ...

    @property
    def state(self) -> ConnectionState: ...

    @property
    def connected(self) -> bool: ...

    @property
    def connections(self) -> int:
        """How many times it has connected (2 after one reconnection)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def close(self) -> None: ...

    async def wait_connected(self, timeout: float | None = None) -> None: ...

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        wait: float | None = 30.0,
    ) -> bool:
        """Publish; with ``wait`` > 0, ride out an outage of up to ``wait`` seconds.
        False when the message could not be handed to the bus."""
        ...

    async def subscribe(self, topic_filter: str, *, qos: int = 1, maxsize: int = 0) -> Subscription:
        """Start receiving messages matching ``topic_filter`` (kept across reconnects)."""
        ...

    def unsubscribe(self, subscription: Subscription) -> None: ...

    async def settled(self, limit: float) -> bool:
        """Return once every message the broker has already sent this client is in its
        readers' hands; False if that took longer than ``limit`` seconds."""
        ...

    def subscription(
        self, topic_filter: str, *, qos: int = 1, maxsize: int = 0
    ) -> AbstractAsyncContextManager[Subscription]: ...


class TransportOptions(TypedDict, total=False):
    """How a client connects; every one optional."""

    client_id: str | None
    """unique per connection (default: ``cscs-`` and a random suffix)"""
    will: Will | None
    keepalive: int
    """seconds between pings (default 5): how soon a vanished client is noticed"""
    connect_timeout: float
    """seconds the first connection may take before BrokerUnavailableError (default 10)"""
    on_connect: OnConnect | None
    persistent_session: bool
    """the broker keeps this client's subscriptions while it is away and queues the QoS 1
    messages meant for it (MQTT ``clean_session`` false; give a stable ``client_id``)"""
    manual_ack: bool
    """a QoS 1 message is acknowledged to the broker only by ``Message.ack()``, so one
    received but not yet made safe is sent again on the next connection (with
    ``persistent_session``: even to the next process)"""


class Connector(Protocol):
    """Where a bus is, and how to open a connection to it."""

    @property
    def url(self) -> str: ...

    def transport(self, **options: Unpack[TransportOptions]) -> Transport:
        """A new, not yet connected, client (enter it with ``async with``)."""
        ...


class BaseTransport:
    """What every transport does the same way: client identity, the connected flag,
    local subscriptions and handing each received message to those that match."""

    def __init__(self, client_id: str | None, on_connect: OnConnect | None, kind: str) -> None:
        self.client_id = client_id or f"cscs-{uuid.uuid4().hex[:12]}"
        self._log = structlog.get_logger(f"cscs.{kind}").bind(client=self.client_id)
        self.command_seqs: Iterator[int] = itertools.count(1)
        self.on_connect = on_connect
        self.state = ConnectionState.NEW
        self.connections = 0
        self._connected = asyncio.Event()
        self._subscriptions: list[Subscription] = []

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def close(self) -> None:
        raise NotImplementedError

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _add_subscription(self, topic_filter: str, maxsize: int) -> Subscription:
        subscription = Subscription(topic_filter, maxsize)
        self._subscriptions.append(subscription)
        return subscription

    async def settled(self, limit: float) -> bool:
        """Return once every message the broker has already sent this client has been
        taken by its reader: nothing unread on the connection (:meth:`_unread`), every
        subscription's queue empty, and the readers given their turn to handle what they
        took last. False if that took longer than ``limit`` seconds (a reader that does
        not read, a flood).

        Why: a deadline must not judge an event missing that has already come. After a
        pause (SIGSTOP, a stalled loop) the event may wait unread in the socket while the
        timer, due long ago, fires first; asking this before judging puts the events
        already delivered first. The client reads a packet per turn of the event loop,
        so this yields turn by turn; it never waits for anything not yet sent."""
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        turns = 0
        while self._unread() or any(s.waiting for s in self._subscriptions):
            if loop.time() >= end:
                return False
            # Turn by turn at first; then 1 ms apart, so that steady traffic that never
            # lets the queues empty costs a waiting deadline no core.
            await asyncio.sleep(0 if turns < _SETTLE_SPIN_TURNS else 0.001)
            turns += 1
        await asyncio.sleep(0)  # the readers handle what they took last
        return True

    def _unread(self) -> bool:
        """Whether the connection holds messages not yet handed to the subscriptions
        (none for a transport that hands them over as they come)."""
        return False

    def _filters(self) -> list[str]:
        """The distinct filters to (re)subscribe at the broker, in subscription order."""
        return list(dict.fromkeys(s.filter for s in self._subscriptions))

    def _deliver(self, message: Message) -> tuple[int, int]:
        """Hand ``message`` to every subscription it matches: how many it matched, and
        how many took it (the others' queues were full)."""
        matched = [s for s in self._subscriptions if s.matches(message.topic)]
        return len(matched), sum(s.offer(message) for s in matched)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to ``subscription``; the broker-side filter stays (harmless)."""
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    async def subscribe(self, topic_filter: str, *, qos: int = 1, maxsize: int = 0) -> Subscription:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def subscription(
        self, topic_filter: str, *, qos: int = 1, maxsize: int = 0
    ) -> AsyncIterator[Subscription]:
        subscription = await self.subscribe(topic_filter, qos=qos, maxsize=maxsize)
        try:
            yield subscription
        finally:
            self.unsubscribe(subscription)

    async def _run_on_connect(self) -> None:
        """The owner's hook, after a (re)connection; a failure is logged, never fatal."""
        if self.on_connect is None:
            return
        try:
            await self.on_connect()
        except Exception as exc:
            self._log.error("the on-connect hook failed", exc_info=exc)
