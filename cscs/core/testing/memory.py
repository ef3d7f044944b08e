"""An MQTT broker's semantics in memory, for tests of CSC logic that need no broker.

It keeps what the CSCs rely on: retained messages (an empty retained payload clears
one, as MQTT 3.1.1 says and Mosquitto does) replayed with ``retain`` set to each new
subscription; ``+``/``#`` filters; QoS 1 publishes that wait out an outage, QoS 0 ones
dropped while disconnected; the last will published, retained if asked, when a client is
dropped without closing; ``on_connect`` after every (re)connection. Clean sessions only,
as every client of this project uses: a client that is away misses what is published
meanwhile. Where one client's filters overlap, a message comes once per matching filter,
as amqtt sends it (Mosquitto 2.0 sends one copy): the harder case for a consumer, so
code tested here takes a repeat as a repeat. ``tests/test_bus.py`` runs its semantic
checks (retained messages, filters, order, a clean close) on this bus and on both real
brokers; the faults staged here (:meth:`drop`, :meth:`stop`) are checked on the real
brokers by the process tests (a killed CSC's last will, a broker restart).

What it does not model: network latency and reordering between publishers, broker
limits, authentication, and a client id taken over by a second client that keeps
reconnecting (here the first client is closed for good). The broker tests (embedded
amqtt and Mosquitto) stay the system tier; this is for fast, deterministic unit tests.

Faults on demand: :meth:`MemoryBroker.drop` loses one client as a crash would (its last
will goes out, it never reconnects); :meth:`MemoryBroker.stop` and :meth:`start` take the
whole broker away and back (clients reconnect and run ``on_connect``; retained messages
are lost, as with a broker that persists nothing).
"""

from __future__ import annotations

import asyncio
from typing import Unpack

from cscs.core.topics import check_topic, topic_matches
from cscs.core.transport import (
    BaseTransport,
    BrokerUnavailableError,
    ConnectionState,
    Message,
    OnConnect,
    Subscription,
    TransportOptions,
    Will,
)

__all__ = ["MemoryBroker", "MemoryTransport"]


class MemoryBroker:
    """A broker in this process's memory; the :class:`~cscs.core.transport.Connector`
    the in-memory transports come from."""

    url = "memory://"

    def __init__(self) -> None:
        self._clients: dict[str, MemoryTransport] = {}  # connected now, by client id
        self._members: set[MemoryTransport] = set()  # entered and not closed or lost
        self._retained: dict[str, Message] = {}
        self._running = asyncio.Event()
        self._running.set()

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def transport(self, **options: Unpack[TransportOptions]) -> MemoryTransport:
        return MemoryTransport(self, **options)

    @property
    def clients(self) -> list[str]:
        """Ids of the clients connected now."""
        return sorted(self._clients)

    # ---- what its clients call (the wire, in a real broker) ----------------------------

    async def wait_running(self, timeout: float) -> None:
        """Until the broker runs (TimeoutError after ``timeout`` seconds)."""
        async with asyncio.timeout(timeout):
            await self._running.wait()

    def connect(self, client: MemoryTransport) -> None:
        """``client`` connects (for :class:`MemoryTransport`: use ``async with``)."""
        self._members.add(client)
        previous = self._clients.get(client.client_id)
        if previous is not None and previous is not client:
            previous.connection_lost(publish_will=False)  # MQTT: a new session takes the id
        self._clients[client.client_id] = client

    def disconnect(self, client: MemoryTransport) -> None:
        """``client`` is gone for good, closed or lost (for :class:`MemoryTransport`)."""
        self._members.discard(client)
        if self._clients.get(client.client_id) is client:
            del self._clients[client.client_id]

    def subscribe(self, client: MemoryTransport, topic_filter: str) -> None:
        """``client`` subscribes: the retained messages its filter matches are sent to it
        (for :class:`MemoryTransport`)."""
        for message in list(self._retained.values()):
            if topic_matches(topic_filter, message.topic):
                client.receive(message)

    def route(self, topic: str, payload: bytes, retain: bool) -> None:
        """A message published: kept if retained, sent to every client subscribed to its
        topic (for :class:`MemoryTransport`, whose ``publish`` is the way to publish)."""
        if retain:
            if payload:
                self._retained[topic] = Message(topic, payload, retain=True)
            else:
                self._retained.pop(topic, None)
        live = Message(topic, payload, retain=False)
        for client in list(self._clients.values()):
            # Once per client however many of its filters match: amqtt sends a copy per
            # filter, and the real bus drops the extra ones (cscs.core.copies).
            if client.subscribed_to(topic):
                client.receive(live)

    # ---- faults ------------------------------------------------------------------------

    def drop(self, client_id: str) -> None:
        """Lose a client as a crash would: its last will is published; it stays gone."""
        client = self._clients.get(client_id)
        if client is None:
            raise KeyError(f"no client {client_id!r} is connected; have {self.clients}")
        client.connection_lost(publish_will=True)

    def stop(self) -> None:
        """The broker goes away: every client is disconnected (no wills: the broker that
        would send them is gone) and retained messages are forgotten."""
        self._running.clear()
        self._retained.clear()
        self._clients.clear()
        for client in list(self._members):
            client.broker_stopped()

    def start(self) -> None:
        """The broker is back: every client it had reconnects (and runs ``on_connect``)."""
        self._running.set()
        for client in list(self._members):
            if client.state is ConnectionState.DISCONNECTED:
                client.reconnect()


class MemoryTransport(BaseTransport):
    """One client of a :class:`MemoryBroker`; a :class:`~cscs.core.transport.Transport`."""

    def __init__(
        self,
        broker: MemoryBroker,
        *,
        client_id: str | None = None,
        will: Will | None = None,
        keepalive: int = 5,  # nothing to ping in memory: a dropped client is dropped at once
        connect_timeout: float = 10.0,
        on_connect: OnConnect | None = None,
        persistent_session: bool = False,  # in memory: nothing is kept for an absent client
        manual_ack: bool = False,  # in memory: nothing to redeliver, acks are no-ops
    ) -> None:
        super().__init__(client_id, on_connect, "memory-bus")
        self.broker = broker
        self._will = will
        self._connect_timeout = connect_timeout
        self._broker_filters: list[str] = []
        self._hooks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return self.broker.url

    # ---- life cycle ----------------------------------------------------------------

    async def __aenter__(self) -> MemoryTransport:
        self.state = ConnectionState.CONNECTING
        try:
            await self.broker.wait_running(self._connect_timeout)
        except TimeoutError:
            self.state = ConnectionState.CLOSED
            raise BrokerUnavailableError(
                f"the in-memory broker stayed stopped for {self._connect_timeout:g} s"
            ) from None
        self.reconnect()
        return self

    async def close(self) -> None:
        """Leave cleanly: no last will."""
        self.state = ConnectionState.CLOSED
        self._connected.clear()
        self.broker.disconnect(self)
        hooks = list(self._hooks)
        for hook in hooks:
            hook.cancel()
        if hooks:
            await asyncio.wait(hooks)

    # ---- what its broker calls ------------------------------------------------------
    # The wire, in a real client: public for :class:`MemoryBroker`, not for its users.

    def reconnect(self) -> None:
        """(Re)connect to the broker, re-subscribe, and run ``on_connect``."""
        self._broker_filters = []
        self.broker.connect(self)
        self.state = ConnectionState.CONNECTED
        self.connections += 1
        self._connected.set()
        for topic_filter in self._filters():
            self._broker_subscribe(topic_filter)
        if self.on_connect is not None:
            hook = asyncio.create_task(self._run_on_connect(), name=f"on-connect-{self.client_id}")
            self._hooks.add(hook)
            hook.add_done_callback(self._hooks.discard)

    def broker_stopped(self) -> None:
        """The broker went away: as with a real connection, an on-connect hook still
        running is cancelled (it runs again at the reconnection)."""
        self._connected.clear()
        self.state = ConnectionState.DISCONNECTED
        for hook in self._hooks:
            hook.cancel()

    def connection_lost(self, *, publish_will: bool) -> None:
        """The connection is gone for good (a crash, or another client took the id)."""
        self.broker.disconnect(self)
        self._connected.clear()
        self.state = ConnectionState.CLOSED
        if publish_will and self._will is not None:
            will = self._will
            self.broker.route(will.topic, will.payload, will.retain)

    def subscribed_to(self, topic: str) -> bool:
        """Whether one of its filters at the broker matches ``topic``."""
        return any(topic_matches(f, topic) for f in self._broker_filters)

    def receive(self, message: Message) -> None:
        """The broker sends it ``message``: handed to every subscription it matches."""
        self._deliver(message)

    # ---- publishing and subscribing ------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        wait: float | None = 30.0,
    ) -> bool:
        check_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
        if not self._connected.is_set():
            if qos == 0 or not wait or self.state is ConnectionState.CLOSED:
                return False
            try:
                await self.wait_connected(wait)
            except TimeoutError:
                return False
        self.broker.route(topic, bytes(payload), retain)
        await asyncio.sleep(0)  # a publish yields, as a real one waits for its PUBACK
        return True

    async def subscribe(self, topic_filter: str, *, qos: int = 1, maxsize: int = 0) -> Subscription:
        subscription = self._add_subscription(topic_filter, maxsize)
        if self._connected.is_set():
            self._broker_subscribe(topic_filter)
        return subscription

    def _broker_subscribe(self, topic_filter: str) -> None:
        """MQTT: subscribing again to the same filter replaces it (and replays retained)."""
        if topic_filter not in self._broker_filters:
            self._broker_filters.append(topic_filter)
        self.broker.subscribe(self, topic_filter)
