"""What the DAQ server lets its clients have in flight, and how it says no, quietly.

Everything the server holds for a client is bounded, so no client behaviour can make it
grow (``docs/daq-protocol.md``, "Limits"). Work *in flight* is work whose reply has not
yet left the server's socket: a ``read`` from the request until its ``data`` message is
gone, a ``list``/``info`` until its reply is gone. ZeroMQ's message trackers say when a
message has left; the :class:`Ledger` counts what is out, per client and overall, and a
request that would go past a limit is answered ``busy`` instead of taken.

The ledger is plain bookkeeping, run on the server's thread only, so it is tested
without sockets. The totals it exposes are single integers, safe to read from another
thread for monitoring (:meth:`Ledger.load`).

A hostile client can make the server refuse thousands of requests a second; each kind
of refusal or failure is logged at most once per interval by :class:`RateLimitedLog`,
with the count of those it kept quiet about.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cscs.core.logs import Throttle
from cscs.daq.protocol import MAX_READS_PER_CLIENT, MAX_REQUEST_BYTES

__all__ = ["Ledger", "Load", "RateLimitedLog", "ServerLimits", "Tracker"]


@dataclass(frozen=True)
class ServerLimits:
    """The bounds of one server (the defaults are documented in the protocol)."""

    reads_per_client: int = MAX_READS_PER_CLIENT
    """Reads one client may have in flight (the client library never asks for more)."""
    replies_per_client: int = 16
    """``list``/``info`` replies one client may have in flight."""
    clients: int = 16
    """Clients with any work in flight at once."""
    reads: int = 64
    """Reads in flight overall. Each holds references to stored arrays, not copies."""
    reply_bytes: int = 16 * 2**20
    """Bytes of ``list``/``info`` replies in flight overall."""
    send_hwm: int = 64
    """Messages ZeroMQ queues for one client (``begin``, errors) before it drops them."""
    receive_hwm: int = 64
    """Requests ZeroMQ takes from one client before it stops reading its connection."""
    max_frame_bytes: int = 16 * MAX_REQUEST_BYTES
    """A bigger inbound frame makes ZeroMQ drop the connection (``ZMQ_MAXMSGSIZE``)."""
    stuck_after: float = 30.0
    """Seconds a message may wait on the socket for its client to read it: past that,
    the client is stuck, its work no longer holds the shared slots, and it is refused
    until it has read what it was sent (or gone)."""
    stuck_clients: int = 1024
    """Stuck clients remembered (and refused); beyond that the longest stuck is forgotten."""


class Tracker(Protocol):
    """What the ledger needs of a ``zmq.MessageTracker``."""

    @property
    def done(self) -> bool: ...


@dataclass(frozen=True)
class Load:
    """What the server has in flight now (for monitoring, tests and the flood benchmark)."""

    clients: int
    reads_preparing: int
    reads_queued: int
    replies_queued: int
    reply_bytes: int
    stuck_clients: int = 0

    @property
    def idle(self) -> bool:
        return self.clients == 0 and self.stuck_clients == 0


@dataclass
class _Peer:
    preparing: int = 0  # reads taken whose data is not yet on the socket
    # data messages on the socket: (tracker, when sent)
    reads: deque[tuple[Tracker, float]] = field(default_factory=deque)
    # list/info replies on the socket: (tracker, bytes, when sent)
    replies: deque[tuple[Tracker, int, float]] = field(default_factory=deque)

    def oldest(self) -> float | None:
        """When the oldest message still on the socket was sent (None: none is)."""
        times = [queue[0][-1] for queue in (self.reads, self.replies) if queue]
        return min(times) if times else None

    @property
    def reads_in_flight(self) -> int:
        return self.preparing + len(self.reads)

    @property
    def idle(self) -> bool:
        return not (self.preparing or self.reads or self.replies)


class Ledger:
    """Work in flight per client and overall, and whether a new request fits.

    The client's own queues are swept (finished trackers dropped) before each decision;
    the whole ledger only when an overall limit is reached, and by the server's
    housekeeping. A sweep looks at the oldest message of each queue and stops at the
    first still out (a client's messages leave in order), and only clients with work in
    flight are in the ledger, at most ``limits.clients``: a sweep is cheap and bounded
    however many clients are connected.

    A client that has not read a message sent to it ``limits.stuck_after`` seconds ago is
    *stuck*: its work leaves the shared counts (clients, reads, reply bytes) for
    ``_stuck`` (at most ``limits.stuck_clients``), so sixteen clients that never read no
    longer hold every slot for ever. A stuck client is refused until its messages have
    left (it read them, or its connection closed, which frees them), then forgotten.
    What it was sent stays queued in ZeroMQ for it, bounded by its per-client limits.
    """

    def __init__(self, limits: ServerLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._peers: dict[bytes, _Peer] = {}
        self._stuck: OrderedDict[bytes, _Peer] = OrderedDict()  # oldest judged first
        self._reads = 0  # preparing (all) + queued (clients not stuck), overall
        self._preparing = 0
        self._replies = 0
        self._reply_bytes = 0

    def load(self) -> Load:
        return Load(
            clients=len(self._peers),
            reads_preparing=self._preparing,
            reads_queued=self._reads - self._preparing,
            replies_queued=self._replies,
            reply_bytes=self._reply_bytes,
            stuck_clients=len(self._stuck),
        )

    def reads_in_flight(self, peer: bytes) -> int:
        self._sweep(peer)
        state = self._peers.get(peer) or self._stuck.get(peer)
        return state.reads_in_flight if state else 0

    # ---- admission -------------------------------------------------------------------

    def refuse_read(self, peer: bytes) -> str | None:
        """Why a new read from ``peer`` cannot be taken now, or None if it can."""
        limits = self.limits
        if (stuck := self._refuse_stuck(peer)) is not None:
            return stuck
        if self.reads_in_flight(peer) >= limits.reads_per_client:
            return f"at most {limits.reads_per_client} reads in flight per client"
        if self._reads >= limits.reads:
            self.sweep()
            if self._reads >= limits.reads:
                return f"at most {limits.reads} reads in flight on this server"
        return self._refuse_client(peer)

    def refuse_reply(self, peer: bytes) -> str | None:
        """Why a ``list``/``info`` from ``peer`` cannot be answered now, or None."""
        limits = self.limits
        if (stuck := self._refuse_stuck(peer)) is not None:
            return stuck
        self._sweep(peer)
        state = self._peers.get(peer)
        if state is not None and len(state.replies) >= limits.replies_per_client:
            return f"at most {limits.replies_per_client} list/info replies in flight per client"
        if self._reply_bytes >= limits.reply_bytes:
            self.sweep()
            if self._reply_bytes >= limits.reply_bytes:
                return f"at most {limits.reply_bytes} bytes of replies in flight on this server"
        return self._refuse_client(peer)

    def _refuse_stuck(self, peer: bytes) -> str | None:
        self._sweep(peer)
        if peer not in self._stuck:
            return None
        return (f"replies sent to this client more than {self.limits.stuck_after:g} s ago "
                "are still unread: read them first")  # fmt: skip

    def _refuse_client(self, peer: bytes) -> str | None:
        if peer in self._peers or len(self._peers) < self.limits.clients:
            return None
        self.sweep()
        if peer in self._peers or len(self._peers) < self.limits.clients:
            return None
        return f"at most {self.limits.clients} clients with work in flight"

    # ---- what happens to work taken ----------------------------------------------------

    def read_started(self, peer: bytes) -> None:
        self._peers.setdefault(peer, _Peer()).preparing += 1
        self._preparing += 1
        self._reads += 1

    def read_finished(self, peer: bytes, tracker: Tracker | None) -> None:
        """The read's data went to the socket (``tracker``), or never will (None)."""
        stuck = peer in self._stuck
        state = self._stuck[peer] if stuck else self._peers[peer]
        state.preparing -= 1
        self._preparing -= 1
        if tracker is not None and not tracker.done:
            state.reads.append((tracker, self._clock()))
            if stuck:
                self._reads -= 1  # a stuck client's queue is not in the shared count
        else:
            self._reads -= 1
            self._forget_if_idle(peer, state)

    def reply_sent(self, peer: bytes, tracker: Tracker, nbytes: int) -> None:
        if tracker.done:
            return
        self._peers.setdefault(peer, _Peer()).replies.append((tracker, nbytes, self._clock()))
        self._replies += 1
        self._reply_bytes += nbytes

    # ---- sweeping ----------------------------------------------------------------------

    def sweep(self) -> None:
        """Drop every finished message, and every client left with nothing in flight;
        judge stuck the clients that have left a message unread too long."""
        for peer in list(self._peers):
            self._sweep(peer)
        for peer in list(self._stuck):
            self._sweep(peer)

    def _sweep(self, peer: bytes) -> None:
        stuck = peer in self._stuck
        state = self._stuck[peer] if stuck else self._peers.get(peer)
        if state is None:
            return
        while state.reads and state.reads[0][0].done:
            state.reads.popleft()
            if not stuck:
                self._reads -= 1
        while state.replies and state.replies[0][0].done:
            _, nbytes, _ = state.replies.popleft()
            if not stuck:
                self._replies -= 1
                self._reply_bytes -= nbytes
        oldest = state.oldest()
        if not stuck and oldest is not None and self._clock() - oldest > self.limits.stuck_after:
            self._judge_stuck(peer, state)
        else:
            self._forget_if_idle(peer, state)

    def _judge_stuck(self, peer: bytes, state: _Peer) -> None:
        """Out of the shared counts: its reads still preparing stay counted (the
        server's work) until they finish."""
        del self._peers[peer]
        self._reads -= len(state.reads)
        self._replies -= len(state.replies)
        self._reply_bytes -= sum(nbytes for _, nbytes, _ in state.replies)
        self._stuck[peer] = state
        if len(self._stuck) > self.limits.stuck_clients:
            # The longest stuck with no read being prepared (its read_finished would
            # not find it): forgotten, its queue is ZeroMQ's alone.
            idle = next((p for p, s in self._stuck.items() if not s.preparing), None)
            if idle is not None:
                del self._stuck[idle]

    def _forget_if_idle(self, peer: bytes, state: _Peer) -> None:
        if state.idle:
            self._peers.pop(peer, None)
            self._stuck.pop(peer, None)


Emit = Callable[..., None]  # emit(level, event, **fields)


class RateLimitedLog:
    """At most one line per kind of event per ``interval`` (a :class:`Throttle` each);
    the rest are counted, and the count is said with the next line of that kind or by
    :meth:`flush`.

    The kinds are a small fixed set chosen by the server (``bad-request``, ``busy``,
    ``internal``, ``dropped``), so this holds a handful of entries whatever a client
    sends.
    """

    def __init__(
        self, emit: Emit, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._emit = emit
        self._interval = interval
        self._clock = clock
        self._kinds: dict[str, Throttle] = {}

    def __call__(self, level: str, kind: str, event: str, **fields: Any) -> None:
        throttle = self._kinds.setdefault(kind, Throttle(self._interval, self._clock))
        said = throttle.admit()
        if said is None:
            return
        suppressed, seconds = said
        if suppressed:
            fields["suppressed"] = suppressed
            fields["suppressed_over_s"] = round(seconds, 1)
        self._emit(level, event, kind=kind, **fields)

    def flush(self) -> None:
        """Say what was kept quiet once its interval has passed (housekeeping calls it)."""
        for kind, throttle in self._kinds.items():
            said = throttle.overdue()
            if said is not None:
                suppressed, seconds = said
                self._emit(
                    "warning",
                    f"{suppressed} more {kind} events were not logged",
                    kind=kind,
                    suppressed=suppressed,
                    suppressed_over_s=round(seconds, 1),
                )
