"""The commander's and the watcher's side: send commands, await acks, follow events.

Used by the operators' tools, by CSCs that command other CSCs, by the test harness and
by anyone scripting against the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

from cscs.core import generic as g
from cscs.core.logs import Throttle
from cscs.core.protocol import Ack, AckCode, decode_json_object, encode, oversized_event
from cscs.core.schema import EventSpec, Payload, TelemetrySpec, parse_payload
from cscs.core.settings import default_identity
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress, Kind, parse_topic
from cscs.core.transport import Message, Subscription, Transport

__all__ = [
    "AckError",
    "CommandTimeoutError",
    "EventStream",
    "Parsed",
    "ParsedStream",
    "Received",
    "Remote",
]

P = TypeVar("P", bound=Payload)
_log = structlog.get_logger("cscs.remote")


class AckError(Exception):
    """A command ended with a final ack other than COMPLETE."""

    def __init__(self, address: CscAddress, ack: Ack) -> None:
        super().__init__(f"{ack.command} to {address}: {ack.code.name}: {ack.result}")
        self.ack = ack


class CommandTimeoutError(TimeoutError):
    """No final ack came in time (the CSC may be absent, or the broker down)."""


@dataclass(frozen=True)
class Received:
    """One event or telemetry message, decoded."""

    address: CscAddress
    kind: Kind
    name: str
    data: dict[str, Any]
    retained: bool = False

    @property
    def seq(self) -> int:
        """ValueError when the peer's ``seq`` is not a count (null, a list, 10**400)."""
        seq = self.data.get("seq", 0)
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
            raise ValueError(f"seq is not a count from 0 to 2**63-1: {str(seq)[:40]!r}")
        return seq

    @property
    def sent_tai(self) -> float:
        """ValueError when the peer's ``sent_tai`` is not a finite time in seconds."""
        sent = self.data.get("sent_tai", 0.0)
        if isinstance(sent, bool) or not isinstance(sent, int | float):
            raise ValueError(f"sent_tai is not a number: {str(sent)[:40]!r}")
        try:
            seconds = float(sent)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds):
            raise ValueError(f"sent_tai is not a finite time: {str(sent)[:40]!r}")
        return seconds

    @classmethod
    def from_message(cls, message: Message) -> Received | None:
        """The message decoded, or None: not an event, telemetry or ack, not a JSON
        object, or too big to parse (said in a log line, at most one per 10 s)."""
        if _refused_as_oversized(message):
            return None
        parsed = parse_topic(message.topic)
        if parsed is None or parsed.kind not in (Kind.EVENT, Kind.TELEMETRY, Kind.ACK):
            return None
        try:
            data = decode_json_object(message.payload)
        except ValueError:
            return None
        return cls(parsed.address, parsed.kind, parsed.name, data, message.retain)

    def parse(self, spec: EventSpec[P] | TelemetrySpec[P]) -> Parsed[P]:
        """This message as ``spec`` declares it; ValueError naming the first bad field."""
        if (self.kind, self.name) != (spec.kind, spec.name):
            raise ValueError(
                f"a {self.kind.value} {self.name} is not a {spec.kind.value} {spec.name}"
            )
        return Parsed(
            self.address, self.name, parse_payload(spec.payload, self.data), self.retained,
            self.seq, self.sent_tai,
        )  # fmt: skip


_oversized_throttle = Throttle()


def _refused_as_oversized(message: Message) -> bool:
    """True for a message beyond :data:`~cscs.core.protocol.MAX_EVENT_BYTES`, refused
    before any parse with a log line naming its topic (cut short) and size."""
    fields = oversized_event(message.topic, message.payload)
    if fields is None:
        return False
    _oversized_throttle.warning(_log, "message too big to parse: dropped", **fields)
    return True


@dataclass(frozen=True)
class Parsed(Generic[P]):
    """One event or telemetry message, validated against its declaration."""

    address: CscAddress
    name: str
    data: P
    retained: bool = False
    seq: int = 0
    sent_tai: float = 0.0


class EventStream:
    """Decoded messages from one subscription (malformed ones are skipped)."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    async def next(self, timeout: float | None = 10.0) -> Received:
        async with asyncio.timeout(timeout):
            while True:
                received = Received.from_message(await self._subscription.get())
                if received is not None:
                    return received

    async def wait_for(
        self, predicate: Callable[[Received], bool], timeout: float | None = 10.0
    ) -> Received:
        async with asyncio.timeout(timeout):
            while True:
                received = await self.next(None)
                if predicate(received):
                    return received

    def pending(self) -> list[Received]:
        """What has arrived and not been read, without waiting: a reader cancelled at
        the end of a run reads its last messages with this rather than lose them."""
        messages = iter(self._subscription.get_nowait, None)
        return [r for r in map(Received.from_message, messages) if r is not None]

    def __aiter__(self) -> AsyncIterator[Received]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Received]:
        while True:
            yield await self.next(None)


class ParsedStream(Generic[P]):
    """Messages of one declared topic, validated; malformed ones are logged and skipped
    (anyone on the bus can publish anything on any topic)."""

    def __init__(self, subscription: Subscription, spec: EventSpec[P] | TelemetrySpec[P]) -> None:
        self._raw = EventStream(subscription)
        self._spec = spec

    async def next(self, timeout: float | None = 10.0) -> Parsed[P]:
        async with asyncio.timeout(timeout):
            while True:
                received = await self._raw.next(None)
                try:
                    return received.parse(self._spec)
                except ValueError as exc:
                    _log.warning("skipped a malformed message", topic=self._spec.name,
                                 sender=str(received.address), error=str(exc))  # fmt: skip

    async def wait_for(
        self, predicate: Callable[[Parsed[P]], bool], timeout: float | None = 10.0
    ) -> Parsed[P]:
        async with asyncio.timeout(timeout):
            while True:
                parsed = await self.next(None)
                if predicate(parsed):
                    return parsed


class Remote:
    """Talks to one CSC. Use as an async context manager over a connected :class:`Bus`."""

    def __init__(self, bus: Transport, address: CscAddress, *, identity: str | None = None) -> None:
        self.bus = bus
        self.address = address
        self.identity = identity or default_identity()
        self._pending: dict[int, asyncio.Queue[Ack]] = {}
        self._acks: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Remote:
        self._acks = await self.bus.subscribe(self.address.ack)
        self._reader = asyncio.create_task(self._read_acks(), name=f"acks-{self.address}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._acks is not None:
            self.bus.unsubscribe(self._acks)

    async def _read_acks(self) -> None:
        assert self._acks is not None
        async for message in self._acks:
            if _refused_as_oversized(message):
                continue
            try:
                ack = Ack.from_wire(decode_json_object(message.payload))
            except ValueError:
                continue
            if ack.origin == self.bus.client_id and ack.seq in self._pending:
                self._pending[ack.seq].put_nowait(ack)

    async def command(
        self,
        name: str,
        params: Mapping[str, Any] | Payload | None = None,
        *,
        timeout: float = 10.0,
        on_ack: Callable[[Ack], None] | None = None,
        check: bool = True,
    ) -> Ack:
        """Send a command and return its final ack.

        ``timeout`` is how long to wait for an ack; an ``INPROGRESS`` ack extends the
        wait by the time it announces. With ``check`` (default), a final ack other than
        COMPLETE raises :class:`AckError`.
        """
        if self._acks is None:
            raise RuntimeError("use the Remote as `async with Remote(...) as remote:`")
        if isinstance(params, Payload):
            params = params.model_dump()
        seq = next(self.bus.command_seqs)
        queue: asyncio.Queue[Ack] = asyncio.Queue()
        self._pending[seq] = queue
        payload = {
            "seq": seq,
            "origin": self.bus.client_id,
            "identity": self.identity,
            "sent_tai": current_tai(),
            "params": dict(params or {}),
        }
        loop = asyncio.get_running_loop()
        try:
            if not await self.bus.publish(
                self.address.command(name), encode(payload), qos=1, wait=timeout
            ):
                raise CommandTimeoutError(
                    f"{name} to {self.address}: not sent, the broker at "
                    f"{self.bus.url} stayed unreachable for {timeout:g} s"
                )
            deadline = loop.time() + timeout
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        ack = await queue.get()
                except TimeoutError:
                    raise CommandTimeoutError(
                        f"{name} to {self.address}: no final ack within the time allowed; "
                        "is the CSC running? (`cscs ocs status`)"
                    ) from None
                if on_ack is not None:
                    on_ack(ack)
                if ack.code is AckCode.INPROGRESS:
                    deadline = max(deadline, loop.time() + ack.timeout + timeout)
                if ack.code.is_final:
                    if check and ack.code is not AckCode.COMPLETE:
                        raise AckError(self.address, ack)
                    return ack
        finally:
            del self._pending[seq]

    @contextlib.asynccontextmanager
    async def stream(self, name: str = "#", kind: Kind = Kind.EVENT) -> AsyncIterator[EventStream]:
        """Follow one event (or telemetry) topic, or all of them with ``"#"``."""
        topic = f"{self.address.root}/{kind.value}/{name}"
        async with self.bus.subscription(topic, maxsize=10_000) as subscription:
            yield EventStream(subscription)

    @contextlib.asynccontextmanager
    async def events(self, spec: EventSpec[P] | TelemetrySpec[P]) -> AsyncIterator[ParsedStream[P]]:
        """Follow one declared event or telemetry topic, each message validated."""
        topic = spec.topic(self.address)
        async with self.bus.subscription(topic, maxsize=10_000) as subscription:
            yield ParsedStream(subscription, spec)

    async def next(self, spec: EventSpec[P] | TelemetrySpec[P], timeout: float = 10.0) -> Parsed[P]:
        """The next message of ``spec`` (for a retained event: its current value)."""
        async with self.events(spec) as stream:
            return await stream.next(timeout)

    async def next_event(self, name: str, timeout: float = 10.0) -> Received:
        """The next ``name`` event, undecoded beyond JSON (for any event, declared here
        or not)."""
        async with self.stream(name) as events:
            return await events.next(timeout)

    async def state(self, timeout: float = 10.0) -> State:
        """The summary state now (summaryState is retained)."""
        return State((await self.next(g.SUMMARY_STATE, timeout)).data.summaryState)

    async def wait_for_state(self, state: State, timeout: float = 10.0) -> Parsed[g.SummaryState]:
        async with self.events(g.SUMMARY_STATE) as events:
            return await events.wait_for(lambda r: r.data.summaryState == int(state), timeout)
