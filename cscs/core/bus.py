"""The MQTT bus: one connection per process part, kept alive across broker outages.

A thin layer over ``aiomqtt``: it owns the connection (with a last will), reconnects
with jittered back-off when the broker goes away, re-subscribes, and then calls the
owner's ``on_connect`` hook so retained state is published again. Everything above it
deals in topics and bytes only. Around it, each about one thing: the address
(``broker_address.py``), which failures are final (``refusal.py``), what is done with a
received message (``delivery.py``), and where aiomqtt is worked around
(``aiomqtt_workarounds.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import socket
import time

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from cscs.core import aiomqtt_workarounds as workaround
from cscs.core.backoff import Backoff
from cscs.core.broker_address import BrokerAddress
from cscs.core.delivery import Inbox
from cscs.core.refusal import refusal
from cscs.core.topics import check_topic
from cscs.core.transport import (
    BaseTransport,
    BrokerUnavailableError,
    ConnectionState,
    OnConnect,
    Subscription,
    Will,
)

__all__ = ["NODELAY", "Bus"]

# Nagle's algorithm would hold each QoS-1 PUBACK/PUBLISH pair for a delayed ACK:
# ~40 ms per hop (docs/performance.md). Every client of ours sets TCP_NODELAY.
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def _connack_code(exc: aiomqtt.MqttError) -> int | None:
    """The code the broker refused the connection with, if it answered (aiomqtt gives
    an int or paho's ``ReasonCode``: MQTT 3.1.1's 4 and 5 then come as 134 and 135)."""
    if not isinstance(exc, MqttConnectError):
        return None
    code = getattr(exc.rc, "value", exc.rc)
    return code if isinstance(code, int) else None


class Bus(BaseTransport):
    """One MQTT connection that survives broker restarts.

    Use as an async context manager. Entering waits for the first connection (up to
    ``connect_timeout``) so that a wrong URL fails at once with a clear error; later
    outages are ridden out with back-off, and ``on_connect`` runs after every
    (re)connection.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str | None = None,
        will: Will | None = None,
        keepalive: int = 5,
        connect_timeout: float = 10.0,
        backoff: Backoff | None = None,
        on_connect: OnConnect | None = None,
        persistent_session: bool = False,
        manual_ack: bool = False,
    ) -> None:
        super().__init__(client_id, on_connect, "bus")
        self._persistent_session = persistent_session
        self._manual_ack = manual_ack
        self._inbox = Inbox(self._deliver, manual_ack=manual_ack)
        self.address = address
        self._will = (
            aiomqtt.Will(will.topic, will.payload, qos=will.qos, retain=will.retain)
            if will is not None
            else None
        )
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._backoff = backoff or Backoff(initial=0.05, maximum=2.0)
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        # The last clients made: their housekeeping tasks are swept at close().
        self._clients_made: collections.deque[aiomqtt.Client] = collections.deque(maxlen=4)
        self._first_attempt: asyncio.Future[None] | None = None

    # ---- life cycle ----------------------------------------------------------------

    async def __aenter__(self) -> Bus:
        self._first_attempt = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._keep_connected(), name=f"bus-{self.client_id}")
        try:
            async with asyncio.timeout(self._connect_timeout):
                await asyncio.shield(self._first_attempt)
        except TimeoutError:
            await self.close()
            raise BrokerUnavailableError(
                f"no MQTT broker answered at {self.address.url} within "
                f"{self._connect_timeout:.0f} s; start one (e.g. `cscs broker`) or pass "
                "--broker mqtt://HOST:PORT"
            ) from None
        except BaseException:  # cancelled while connecting: the keeper must not outlive it
            await self.close()
            raise
        return self

    @property
    def url(self) -> str:
        return self.address.url

    async def close(self) -> None:
        self.state = ConnectionState.CLOSED
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # aiomqtt waits for the disconnect without a time limit; a process must not
            # hang on exit because of it, so a second cancel abandons the connection.
            for _ in range(2):
                done, _pending = await asyncio.wait({task}, timeout=5.0)
                if done:
                    break
                self._log.warning("MQTT disconnect is not finishing; abandoning the connection")
                task.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the connection is being closed anyway
        self._connected.clear()
        # A housekeeping task started after its connection's own sweep (the socket's
        # open callback came late, as it can when a broker goes mid-iteration) is swept
        # here, once nothing can start another.
        for client in self._clients_made:
            await workaround.stop_housekeeping(client)

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
        """Publish; with ``wait`` > 0, ride out an outage of up to ``wait`` seconds.

        Returns False when the message could not be handed to the broker (QoS 0
        while disconnected, or still disconnected after ``wait``).
        """
        check_topic(topic)
        if qos == 0:
            wait = 0.0  # QoS 0 is not worth waiting for: dropped while disconnected
        deadline = asyncio.get_running_loop().time() + (wait or 0.0)
        while True:
            client = self._client
            if client is not None and self._connected.is_set():
                try:
                    await workaround.publish(client, topic, payload, qos, retain)
                    return True
                except (aiomqtt.MqttError, TimeoutError) as exc:
                    self._log.debug("publish interrupted", topic=topic, error=repr(exc))
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self.state is ConnectionState.CLOSED:
                return False
            try:
                await self.wait_connected(remaining)
            except TimeoutError:
                return False
            if client is self._client:
                # The connection we failed on is still the current one; wait for it to
                # be replaced rather than spinning on a dying socket.
                await asyncio.sleep(0)

    async def subscribe(self, topic_filter: str, *, qos: int = 1, maxsize: int = 0) -> Subscription:
        """Start receiving messages matching ``topic_filter`` (kept across reconnects)."""
        subscription = self._add_subscription(topic_filter, maxsize)
        client = self._client
        if client is not None and self._connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                await client.subscribe(topic_filter, qos=qos)
                if client is self._client:
                    self._inbox.subscribed(topic_filter)
        return subscription

    # ---- the connection keeper -----------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self.address.host,
            self.address.port,
            username=self.address.username,
            password=self.address.password,
            identifier=self.client_id,
            will=self._will,
            keepalive=self._keepalive,
            # By default no broker-side queues for absent clients (amqtt grows them).
            clean_session=not self._persistent_session,
            protocol=aiomqtt.ProtocolVersion.V311,
            tls_context=self.address.tls_context(),
            socket_options=NODELAY,
            timeout=10.0,
        )
        if self._manual_ack:
            workaround.enable_manual_ack(client)
        self._clients_made.append(client)
        return client

    async def _keep_connected(self) -> None:
        while self.state is not ConnectionState.CLOSED:
            self.state = ConnectionState.CONNECTING
            try:
                client = self._make_client()
            except Exception as exc:  # not the broker's doing: say it, do not retry
                if self._first_attempt is not None and not self._first_attempt.done():
                    self._first_attempt.set_exception(exc)
                raise
            try:
                async with client:
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                refused = refusal(self.address, _connack_code(exc), str(exc))
                if refused is not None and self.state is not ConnectionState.CLOSED:
                    # Wrong credentials or an untrusted certificate do not pass with time.
                    if self._first_attempt is not None and not self._first_attempt.done():
                        self._first_attempt.set_exception(refused)
                        return
                    self._log.error("the broker refuses this client", error=str(refused))
                if self._first_attempt is not None and not self._first_attempt.done():
                    # Keep trying until the caller's connect timeout; say why meanwhile.
                    self._log.debug("broker not reachable yet", error=str(exc))
                elif self.state is not ConnectionState.CLOSED:
                    self._log.warning(
                        "lost the MQTT broker; reconnecting",
                        broker=self.address.url,
                        error=str(exc),
                    )
            finally:
                self._client = None
                self._connected.clear()
                await workaround.stop_housekeeping(client)
            if self.state is ConnectionState.CLOSED:
                return
            self.state = ConnectionState.DISCONNECTED
            await asyncio.sleep(self._backoff.next_delay())

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._inbox.connected()
        for topic_filter in self._filters():
            await client.subscribe(topic_filter, qos=1)
            self._inbox.subscribed(topic_filter)
        self._client = client
        self.state = ConnectionState.CONNECTED
        self.connections += 1
        self._backoff.reset()
        self._connected.set()
        if self.connections > 1:
            self._log.info("reconnected to the MQTT broker", broker=self.address.url)
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)
        hook = None
        if self.on_connect is not None:
            # Run as a task: it publishes, and publishing needs this loop reading acks.
            hook = asyncio.create_task(self._run_on_connect(), name=f"on-connect-{self.client_id}")
        try:
            async for raw in client.messages:
                payload = raw.payload if isinstance(raw.payload, bytes | bytearray) else b""
                topic = raw.topic.value
                ack = functools.partial(self._ack, client, raw.mid, raw.qos)
                withheld = self._inbox.receive(
                    topic, bytes(payload), retained=bool(raw.retain), qos=raw.qos, ack=ack,
                    now=time.monotonic(),
                )  # fmt: skip
                if withheld:
                    self._log.warning("a reader fell behind: message left with the broker",
                                      topic=topic[:200])  # fmt: skip
        finally:
            if hook is not None and not hook.done():
                hook.cancel()

    def _unread(self) -> bool:
        client = self._client
        return client is not None and workaround.unread(client)

    def _ack(self, client: aiomqtt.Client, mid: int, qos: int) -> None:
        """Acknowledge a received message, unless its connection has been replaced
        since: the broker then sends it again on the new one."""
        if client is self._client:
            workaround.ack(client, mid, qos)
