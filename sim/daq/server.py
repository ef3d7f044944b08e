"""The simulated DAQ's pixel server: the store, served over ZeroMQ (``docs/daq-protocol.md``).

One ROUTER socket serves every client. Each ``read`` runs as its own task (so a slow
link delays only its own reader) and sends the sensor's segments straight from the
store's arrays, without a copy. Each client may have at most ``MAX_READS_PER_CLIENT``
replies still queued on the socket (ZeroMQ's message trackers say when one has left);
a client that asks for more without reading is told ``busy``, so a slow reader cannot
make the server hold more. Anything unreadable is answered with an error and the server
carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
import zmq
import zmq.asyncio

from cscs.camera.geometry import SEGMENT_COLS, SEGMENT_ROWS, SEGMENTS
from cscs.daq.errors import DaqError
from cscs.daq.protocol import (
    MAGIC,
    MAX_READS_PER_CLIENT,
    Read,
    Request,
    RequestError,
    encode,
    error_reply,
    parse_request,
)
from sim.daq.faults import READ_FAULTS, FaultKind, FaultPlan, FaultRule
from sim.daq.store import DaqStore

__all__ = ["DaqServer"]


@dataclass
class _Stats:
    requests: int = 0
    bad_requests: int = 0
    sensors_sent: int = 0
    bytes_sent: int = 0
    busy_refusals: int = 0
    max_in_flight: int = 0  # the most reads one client ever had open


def _refuse_live_ipc(endpoint: str) -> None:
    """ZeroMQ binds an ``ipc://`` path by replacing whatever is there, which would
    silently steal a running server's clients; refuse a path something listens on."""
    if not endpoint.startswith("ipc://"):
        return
    path = endpoint.removeprefix("ipc://")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return  # nothing there, or a stale file ZeroMQ may replace
    finally:
        probe.close()
    raise zmq.ZMQError(errno.EADDRINUSE, "another process is listening on this path")


class DaqServer:
    """Serve ``store`` on ``endpoints`` (``tcp://host:port``, ``tcp://127.0.0.1:*``,
    ``ipc:///path``) until closed."""

    def __init__(
        self,
        store: DaqStore,
        endpoints: list[str],
        faults: FaultPlan | None = None,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.store = store
        self.faults = faults or FaultPlan()
        self.stats = _Stats()
        self.log = structlog.get_logger("daq-server")
        self._context = context or zmq.asyncio.Context.instance()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        # Streams stay far below the send high-water mark (credit bounds them); a client
        # that floods small requests without reading has its replies dropped at the mark.
        self._socket.setsockopt(zmq.SNDHWM, 16 * MAX_READS_PER_CLIENT)
        self.endpoints: list[str] = []
        try:
            for endpoint in endpoints:
                _refuse_live_ipc(endpoint)
                self._socket.bind(endpoint)
                last = self._socket.getsockopt(zmq.LAST_ENDPOINT)
                assert isinstance(last, bytes)
                self.endpoints.append(last.decode())
        except zmq.ZMQError as exc:
            self._socket.close()
            raise OSError(f"DAQ server cannot bind {endpoint}: {exc}") from exc
        self._reads: dict[tuple[bytes, int], asyncio.Task[None]] = {}
        # Replies still on the socket, per client: what flow control counts.
        self._queued: dict[bytes, list[zmq.MessageTracker]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DaqServer:
        self._task = asyncio.create_task(self._serve(), name="daq-server")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = list(self._reads.values())
        if self._task is not None:
            tasks.append(self._task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._reads.clear()
        self._task = None
        self._socket.close(linger=0)

    async def _send(self, peer: bytes, frames: list[Any], copy: bool = True) -> None:
        await self._socket.send_multipart([peer, *frames], copy=copy)

    async def _serve(self) -> None:
        while True:
            frames = await self._socket.recv_multipart()
            peer, body = frames[0], frames[1:]
            self.stats.requests += 1
            try:
                request = parse_request(body)
            except RequestError as exc:
                self.stats.bad_requests += 1
                self.log.warning("bad DAQ request", reason=str(exc))
                await self._send(peer, error_reply(exc.request_id, "bad-request", str(exc)))
                continue
            try:
                await self._handle(peer, request)
            except DaqError as exc:
                reply = error_reply(request.id, exc.code, exc.cause, image=exc.image)
                await self._send(peer, reply)

    async def _handle(self, peer: bytes, request: Request) -> None:
        if isinstance(request, Read):
            self._start_read(peer, request)
        elif request.op == "cancel":
            task = self._reads.pop((peer, request.id), None)
            if task is not None:
                task.cancel()
        elif request.op == "list":
            images = [image.describe() for image in self.store.images()]
            await self._send(
                peer, [MAGIC, encode({"id": request.id, "ok": True, "images": images})]
            )
        else:  # info
            image = self.store.info(request.image).describe()
            await self._send(peer, [MAGIC, encode({"id": request.id, "ok": True, "image": image})])

    def in_flight(self, peer: bytes) -> int:
        """Reads of ``peer`` being prepared or still queued on the socket."""
        queued = [t for t in self._queued.get(peer, []) if not t.done]
        if queued:
            self._queued[peer] = queued
        else:
            self._queued.pop(peer, None)
        return len(queued) + sum(1 for p, _ in self._reads if p == peer)

    def _start_read(self, peer: bytes, request: Read) -> None:
        key = (peer, request.id)
        if key in self._reads:
            raise DaqError(request.image, request.sensor, f"request id {request.id} is in use")
        if len(self._queued) > 64:  # forget clients whose replies have all gone
            for other in list(self._queued):
                self.in_flight(other)
        in_flight = self.in_flight(peer)
        if in_flight >= MAX_READS_PER_CLIENT:
            self.stats.busy_refusals += 1
            raise DaqError(
                request.image,
                request.sensor,
                f"busy: at most {MAX_READS_PER_CLIENT} reads in flight per client",
                code="busy",
            )
        self.stats.max_in_flight = max(self.stats.max_in_flight, in_flight + 1)
        self._reads[key] = asyncio.create_task(
            self._read(peer, request), name=f"daq-read-{request.image}-{request.sensor}"
        )

    async def _read(self, peer: bytes, request: Read) -> None:
        image, sensor = request.image, request.sensor
        try:
            fault = self.faults.take(image, sensor, READ_FAULTS)
            if fault is not None:
                self.log.warning(
                    "injecting fault", fault=fault.kind.value, image=image, sensor=sensor
                )
                if fault.kind is FaultKind.EVICT:
                    self.store.evict(image, "fault injection: evicted before it was read")
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
                "checksum": "xxh3_64",
                "checksums": list(data.checksums),
            }
            await self._send(peer, [MAGIC, encode(begin)])
            frames = await self._frames(fault, data.segments)
            if frames is None:
                return  # the link "dropped": the client never sees the pixels
            header = encode({"id": request.id, "ok": True, "kind": "data"})
            tracker = await self._socket.send_multipart(
                [peer, MAGIC, header, *frames], copy=False, track=True
            )
            assert tracker is not None  # track=True
            self._queued.setdefault(peer, []).append(tracker)
            self.stats.sensors_sent += 1
            self.stats.bytes_sent += data.nbytes
        except DaqError as exc:
            await self._send(peer, error_reply(request.id, exc.code, exc.cause, image=image))
        finally:
            self._reads.pop((peer, request.id), None)

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
