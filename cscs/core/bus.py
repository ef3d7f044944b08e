"""The MQTT bus: one connection per process part, kept alive across broker outages.

A thin layer over ``aiomqtt``: it owns the connection (with a last will), reconnects
with jittered back-off when the broker goes away, re-subscribes, and then calls the
owner's ``on_connect`` hook so retained state is published again. Everything above it
deals in topics and bytes only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Unpack
from urllib.parse import unquote, urlsplit

import aiomqtt
import paho.mqtt.client as mqtt
from aiomqtt.exceptions import MqttConnectError

from cscs.core.backoff import Backoff
from cscs.core.copies import OverlapCopies
from cscs.core.topics import check_topic, topic_matches
from cscs.core.transport import (
    BaseTransport,
    BrokerRefusedError,
    BrokerUnavailableError,
    ConnectionState,
    Message,
    OnConnect,
    Subscription,
    TransportOptions,
    Will,
)

_PUBLISH_TIMEOUT = 10.0  # s for the broker to acknowledge a QoS 1 publish

__all__ = ["DEFAULT_BROKER_URL", "NODELAY", "BrokerAddress", "Bus"]

DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
# Nagle's algorithm would hold each QoS-1 PUBACK/PUBLISH pair for a delayed ACK:
# ~40 ms per hop (docs/performance.md). Every client of ours sets TCP_NODELAY.
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def _refusal(exc: aiomqtt.MqttError, address: BrokerAddress) -> BrokerRefusedError | None:
    """The error to give at once when the broker refused us for good: a login it does
    not accept (CONNACK 4, 5) or a certificate this client does not trust."""
    who = f"user {address.username!r}" if address.username else "an anonymous client"
    if isinstance(exc, MqttConnectError) and exc.rc in (4, 5, 134, 135):
        return BrokerRefusedError(
            f"the broker at {address.url} refused {who}: {exc} (check the user name and "
            "the password file: CSCS_BROKER_USERNAME, CSCS_BROKER_PASSWORD_FILE)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
        return BrokerRefusedError(
            f"the broker at {address.url} presented a certificate this client does not "
            f"trust: {exc} (give its certificate authority: --ca-file or CSCS_BROKER_CA)"
        )
    return None


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and how to log in: ``mqtt://user:pass@host:port``.

    ``mqtts://`` turns on TLS (default port 8883); ``ca_file`` names the certificate
    authority to trust instead of the system's.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None

    @classmethod
    def from_url(cls, url: str, ca_file: str | None = None) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp"):
            raise ValueError(
                f"broker URL {url!r} must start with mqtt:// or mqtts://, "
                "e.g. mqtt://127.0.0.1:1883"
            )
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ValueError(f"broker URL {url!r} has a port that is not a number") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=ca_file,
        )

    @property
    def url(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def transport(self, **options: Unpack[TransportOptions]) -> Bus:
        """A :class:`Bus` to this broker (the :class:`~cscs.core.transport.Connector`
        of a real MQTT broker)."""
        return Bus(self, **options)


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
        self._copies = OverlapCopies()
        self._at_broker: set[str] = set()  # filters subscribed on the current connection
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
            await _stop_housekeeping(client)

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
                    # aiomqtt bounds a publish with asyncio.wait_for, which in Python 3.11
                    # can swallow a cancellation (and a CSC would then never stop); it
                    # gets no limit and asyncio.timeout bounds it instead.
                    async with asyncio.timeout(_PUBLISH_TIMEOUT):
                        await client.publish(
                            topic, payload, qos=qos, retain=retain, timeout=math.inf
                        )
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
                    self._at_broker.add(topic_filter)
        return subscription

    # ---- the connection keeper -----------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        client = self._new_client()
        self._clients_made.append(client)
        return client

    def _new_client(self) -> aiomqtt.Client:
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
            # aiomqtt has no option for it; paho's own switch, on aiomqtt's paho client.
            _paho(client).manual_ack_set(True)
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
                refusal = _refusal(exc, self.address)
                if refusal is not None and self.state is not ConnectionState.CLOSED:
                    # Wrong credentials or an untrusted certificate do not pass with time.
                    if self._first_attempt is not None and not self._first_attempt.done():
                        self._first_attempt.set_exception(refusal)
                        return
                    self._log.error("the broker refuses this client", error=str(refusal))
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
                await _stop_housekeeping(client)
            if self.state is ConnectionState.CLOSED:
                return
            self.state = ConnectionState.DISCONNECTED
            await asyncio.sleep(self._backoff.next_delay())

    def _is_copy(self, topic: str, payload: bytes | bytearray, retained: bool) -> bool:
        """An extra copy the broker sent for overlapping filters (cscs.core.copies):
        counted against the filters at the broker, which outlive a reader's unsubscribe."""
        filters = sum(topic_matches(f, topic) for f in self._at_broker) if not retained else 0
        return self._copies.is_copy(
            topic, bytes(payload), retained=retained, matching_filters=filters,
            now=time.monotonic(),
        )  # fmt: skip

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._at_broker = set()
        for topic_filter in self._filters():
            await client.subscribe(topic_filter, qos=1)
            self._at_broker.add(topic_filter)
        self._copies.clear()
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
                topic, retain = raw.topic.value, bool(raw.retain)
                if self._is_copy(topic, payload, retain):
                    if self._manual_ack and raw.qos > 0:  # acknowledged, never delivered
                        _PendingAck(self, client, raw.mid, raw.qos).taken_by(0)
                    continue
                if not self._manual_ack or raw.qos == 0:
                    self._deliver(Message(topic, bytes(payload), retain))
                    continue
                ack = _PendingAck(self, client, raw.mid, raw.qos)
                matched, taken = self._deliver(Message(topic, bytes(payload), retain, ack=ack))
                if taken < matched:  # a reader's queue was full
                    # Never acknowledged: the broker sends it again on the next connection.
                    ack.withhold()
                    self._log.warning("a reader fell behind: message left with the broker",
                                      topic=topic[:200])  # fmt: skip
                ack.taken_by(taken)
        finally:
            if hook is not None and not hook.done():
                hook.cancel()


class _PendingAck:
    """One received QoS 1/2 message of a ``manual_ack`` bus: acknowledged to the broker
    once every subscription that took it has called it (at once if none wanted it), and
    never if one that wanted it had no room. An ack for a connection that has since been
    replaced is not sent: the broker sends the message again on the new one."""

    def __init__(self, bus: Bus, client: aiomqtt.Client, mid: int, qos: int) -> None:
        self._bus, self._client, self._mid, self._qos = bus, client, mid, qos
        self._owed = 0
        self._sent = False

    def withhold(self) -> None:
        """A reader that should have had it did not: it must come again."""
        self._sent = True

    def taken_by(self, readers: int) -> None:
        self._owed += readers
        if self._owed <= 0:
            self._send()

    def __call__(self) -> None:
        self._owed -= 1
        if self._owed <= 0:
            self._send()

    def _send(self) -> None:
        if self._sent or self._client is not self._bus._client:
            return
        self._sent = True
        _paho(self._client).ack(self._mid, self._qos)


def _paho(client: aiomqtt.Client) -> mqtt.Client:
    """aiomqtt's paho client (private, hence checked): paho's ``manual_ack`` has no
    aiomqtt equivalent."""
    paho = getattr(client, "_client", None)
    if not isinstance(paho, mqtt.Client):
        raise RuntimeError("this aiomqtt has no paho client to acknowledge messages with")
    return paho


async def _stop_housekeeping(client: aiomqtt.Client) -> None:
    """Stop aiomqtt's once-a-second housekeeping task of a closed client.

    aiomqtt 2.5 starts that task with ``call_soon_threadsafe`` when the socket opens and
    cancels it when the socket closes; a connection closed before the start callback
    ran (a CSC stopped just as it connected) gets the task afterwards, and one that is
    abandoned mid-disconnect never has it cancelled. Either way it would outlive the
    connection. The callback gets its turn first, then the task is cancelled.
    """
    for _ in range(3):  # the start callback, and what it schedules, get their turns
        await asyncio.sleep(0)
    task = getattr(client, "_misc_task", None)  # private, hence looked up defensively
    if isinstance(task, asyncio.Task) and not task.done():
        task.cancel()
