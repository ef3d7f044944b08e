"""The DAQ server's work, on the server's own thread and event loop (ADR 0011).

:class:`Serving` receives each message, answers it and streams reads; it runs on the
loop :class:`~sim.daq.server.DaqServer` starts in its thread, never on the camera's.
Every message is its own unit of failure: whatever goes wrong with one (a malformed
request, a bug, a ``MemoryError``) is answered with an error reply where the client can
still be reached, logged (rate-limited) and forgotten, and the next message is served.

Each ``read`` runs as its own task (a slow link delays only its reader) and sends the
sensor's segments straight from the store's arrays, without a copy. What the server
takes on is bounded by the :class:`~sim.daq.limits.Ledger`; the excess is told ``busy``.
Replies go out with ``ROUTER_MANDATORY`` and without waiting: a reply to a client that
is gone or not reading is dropped at once and counted, never queued in Python.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from cscs.camera.geometry import SEGMENT_COLS, SEGMENT_ROWS, SEGMENTS
from cscs.daq.errors import DaqError
from cscs.daq.protocol import (
    CHECKSUM,
    MAGIC,
    Read,
    Request,
    RequestError,
    encode,
    error_reply,
    parse_request,
)
from sim.daq.faults import READ_FAULTS, FaultKind, FaultPlan, FaultRule
from sim.daq.limits import Ledger, RateLimitedLog
from sim.daq.store import DaqStore

__all__ = ["Serving", "Stats"]

#: Runs a function on the camera's loop and waits for it (the store's ``on_evict`` is
#: the camera's, and must not be called from this thread).
OnOwner = Callable[[Callable[[], None]], Awaitable[None]]


@dataclass
class Stats:
    """Counters, written by the server's thread (read them anywhere: plain integers)."""

    requests: int = 0
    bad_requests: int = 0
    sensors_sent: int = 0
    bytes_sent: int = 0
    busy_refusals: int = 0
    max_in_flight: int = 0  # the most reads one client ever had open
    internal_errors: int = 0  # messages whose handling failed unexpectedly (answered)
    replies_dropped: int = 0  # the client was gone, or had stopped reading
    serve_failures: int = 0  # a loop of the server's own died (a bug) and was restarted
    connections_accepted: int = 0
    connections_closed: int = 0
    memory_trims: int = 0  # freed memory given back after many connections closed


@dataclass
class _ReadState:
    tracker: zmq.MessageTracker | None = None  # set once the data is on the socket


class Serving:
    """Receive, answer and stream for one ROUTER socket, on the current event loop."""

    def __init__(
        self,
        socket: zmq.asyncio.Socket,
        store: DaqStore,
        faults: FaultPlan,
        ledger: Ledger,
        stats: Stats,
        quiet: RateLimitedLog,
        on_owner: OnOwner,
    ) -> None:
        self.store = store
        self.faults = faults
        self.ledger = ledger
        self.stats = stats
        self._socket = socket
        self._quiet = quiet
        self._on_owner = on_owner
        self._reads: dict[tuple[bytes, int], asyncio.Task[None]] = {}
        self._idle_waiters: list[Callable[[], None]] = []

    # ---- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Receive and answer until cancelled. Only a failure outside any one message
        (of the socket, or a bug here) ends it; the server then reports and restarts it."""
        while True:
            frames = await self.receive()
            await self.handle(frames)

    async def receive(self) -> list[zmq.Frame]:
        # Not copied: a frame is looked at by length before anything reads it.
        return await self._socket.recv_multipart(copy=False)

    async def handle(self, frames: list[zmq.Frame]) -> None:
        """Answer one message; never raises (but for cancellation)."""
        self.stats.requests += 1
        try:
            await self._handle(frames)
        except Exception as exc:  # the error path itself failed: count, log, carry on
            self._internal(exc)

    async def _handle(self, frames: list[zmq.Frame]) -> None:
        peer = frames[0].bytes
        request_id: int | None = None
        try:
            request = parse_request([frame.buffer for frame in frames[1:]])
            request_id = request.id
            await self._dispatch(peer, request)
        except RequestError as exc:
            self.stats.bad_requests += 1
            self._quiet("warning", "bad-request", "bad DAQ request", reason=str(exc))
            await self._send(peer, error_reply(exc.request_id, "bad-request", str(exc)))
        except DaqError as exc:
            await self._send_error(peer, request_id, exc)
        except Exception as exc:  # RecursionError, MemoryError, a bug: anything at all
            self._internal(exc)
            await self._send(peer, _internal_reply(request_id, exc))

    def _internal(self, exc: BaseException) -> None:
        self.stats.internal_errors += 1
        self._quiet("error", "internal", "a DAQ request failed unexpectedly", exc_info=exc)

    async def _dispatch(self, peer: bytes, request: Request) -> None:
        if isinstance(request, Read):
            self._start_read(peer, request)
            return
        if request.op == "cancel":  # no answer, as documented
            task = self._reads.pop((peer, request.id), None)
            if task is not None:
                task.cancel()
            return
        refusal = self.ledger.refuse_reply(peer)
        if refusal is not None:
            raise self._busy(request.image, "", refusal)
        if request.op == "list":
            body = {"id": request.id, "ok": True, "images": self.store.describe()}
        else:  # info
            body = {"id": request.id, "ok": True, "image": self.store.describe(request.image)[0]}
        payload = encode(body)
        # Tracked (so zero-copy, even when small): the ledger counts it until it has left.
        frame = zmq.Frame(payload, copy=False, track=True)
        tracker = await self._send_tracked(peer, [MAGIC, frame])
        if tracker is not None:
            self.ledger.reply_sent(peer, tracker, len(payload))

    def _busy(self, image: str, sensor: str, refusal: str) -> DaqError:
        self.stats.busy_refusals += 1
        self._quiet("warning", "busy", "refused a DAQ request: busy", reason=refusal)
        return DaqError(image, sensor, f"busy: {refusal}", code="busy")

    # ---- reads -------------------------------------------------------------------------

    def _start_read(self, peer: bytes, request: Read) -> None:
        key = (peer, request.id)
        if key in self._reads:
            raise RequestError(f"request id {request.id} is in use", request.id, request.image)
        refusal = self.ledger.refuse_read(peer)
        if refusal is not None:
            raise self._busy(request.image, request.sensor, refusal)
        state = _ReadState()
        task = asyncio.create_task(
            self._read(peer, request, state), name=f"daq-read-{request.image}-{request.sensor}"
        )
        # Bookkeeping in a done callback: it runs even for a task cancelled before it
        # ever started, when the coroutine's own `finally` would not.
        self.ledger.read_started(peer)
        self._reads[key] = task
        task.add_done_callback(functools.partial(self._read_done, key, state))
        in_flight = self.ledger.reads_in_flight(peer)
        self.stats.max_in_flight = max(self.stats.max_in_flight, in_flight)

    def _read_done(
        self, key: tuple[bytes, int], state: _ReadState, task: asyncio.Task[None]
    ) -> None:
        if self._reads.get(key) is task:
            del self._reads[key]
        self.ledger.read_finished(key[0], state.tracker)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._internal(exc)

    async def _read(self, peer: bytes, request: Read, state: _ReadState) -> None:
        image, sensor = request.image, request.sensor
        try:
            fault = self.faults.take(image, sensor, READ_FAULTS)
            if fault is not None:
                self._quiet(
                    "warning", "fault", "injecting fault", fault=fault.kind.value,
                    image=image, sensor=sensor,
                )  # fmt: skip
                if fault.kind is FaultKind.EVICT:
                    reason = "fault injection: evicted before it was read"
                    await self._on_owner(functools.partial(self.store.evict, image, reason))
            data = self.store.sensor(image, sensor)
            begin = {
                "id": request.id,
                "ok": True,
                "kind": "begin",
                "image": image,
                "sensor": sensor,
                "segments": [s.name for s in SEGMENTS],
                "dtype": np.dtype(np.int32).newbyteorder("<").str,
                "shape": [SEGMENT_ROWS, SEGMENT_COLS],
                "checksum": CHECKSUM,
                "checksums": list(data.datasums),
            }
            if not await self._send(peer, [MAGIC, encode(begin)]):
                return  # gone, or not reading: the pixels would be dropped too
            frames = await self._frames(fault, data.segments)
            if frames is None:
                return  # the link "dropped": the client never sees the pixels
            header = encode({"id": request.id, "ok": True, "kind": "data"})
            state.tracker = await self._send_tracked(peer, [MAGIC, header, *frames])
            if state.tracker is not None:
                self.stats.sensors_sent += 1
                self.stats.bytes_sent += data.nbytes
        except DaqError as exc:
            await self._send_error(peer, request.id, exc)
        except Exception as exc:
            self._internal(exc)
            await self._send(peer, _internal_reply(request.id, exc))

    async def _frames(
        self, fault: FaultRule | None, segments: tuple[np.ndarray[Any, Any], ...]
    ) -> list[memoryview] | None:
        """The frames to send: the stored arrays, or what the fault makes of them."""
        frames = [pixels.data for pixels in segments]
        if fault is None:
            return frames
        if fault.kind is FaultKind.SLOW:
            await asyncio.sleep(fault.delay * len(segments))
        elif fault.kind is FaultKind.DROP:
            return None
        elif fault.kind is FaultKind.CORRUPT:
            damaged = segments[fault.segment].copy()
            damaged.flat[damaged.size // 2] ^= 0x40  # one flipped bit
            frames[fault.segment] = damaged.data
        return frames

    # ---- sending -----------------------------------------------------------------------

    async def _send_error(self, peer: bytes, request_id: int | None, exc: DaqError) -> None:
        await self._send(peer, error_reply(request_id, exc.code, exc.cause, image=exc.image))

    async def _send(self, peer: bytes, frames: list[bytes]) -> bool:
        """A small reply, copied; False if it was dropped."""
        sent, _ = await self._put(peer, frames, copy=True)
        return sent

    async def _send_tracked(self, peer: bytes, frames: list[Any]) -> zmq.MessageTracker | None:
        """Zero-copy, tracked; None if it was dropped."""
        _, tracker = await self._put(peer, frames, copy=False)
        return tracker

    async def _put(
        self, peer: bytes, frames: list[Any], *, copy: bool
    ) -> tuple[bool, zmq.MessageTracker | None]:
        try:
            tracker = await self._socket.send_multipart(
                [peer, *frames], flags=zmq.DONTWAIT, copy=copy, track=not copy
            )
        except zmq.ZMQError as exc:  # Again: its queue is full; EHOSTUNREACH: it is gone
            self.stats.replies_dropped += 1
            self._quiet("info", "dropped", "dropped a DAQ reply", reason=exc.strerror)
            return False, None
        return True, tracker

    # ---- housekeeping ------------------------------------------------------------------

    def tidy(self) -> None:
        """Forget finished work, say what the rate limit kept quiet, wake idle waiters."""
        self.ledger.sweep()
        self._quiet.flush()
        if self.ledger.load().idle:
            waiters, self._idle_waiters = self._idle_waiters, []
            for wake in waiters:
                wake()

    def when_idle(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (on this loop) once nothing is in flight."""
        self._idle_waiters.append(wake)
        self.tidy()

    async def close(self) -> None:
        tasks = list(self._reads.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _internal_reply(request_id: int | None, exc: BaseException) -> list[bytes]:
    message = f"the DAQ server failed to handle this request ({type(exc).__name__})"
    return error_reply(request_id, "internal", message)
