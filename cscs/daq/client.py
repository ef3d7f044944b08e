"""The DAQ client library: what the archiver uses to list images and read pixels.

Every read is verified: each segment's checksum is checked on arrival, the stream must
deliver all 16 segments without stalling, and every failure raises a
:class:`~cscs.daq.errors.DaqError` naming the image, the sensor and the cause. Pixels
arrive as read-only numpy views on ZeroMQ's receive buffers: no copy is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import numpy as np
import structlog
import xxhash
import zmq
import zmq.asyncio

from cscs.camera.geometry import SEGMENT_COLS, SEGMENT_NAMES, SEGMENT_ROWS
from cscs.daq.errors import (
    ChecksumMismatchError,
    DaqError,
    DaqUnavailableError,
    StreamStalledError,
    error_for_code,
)
from cscs.daq.protocol import (
    MAGIC,
    MAX_READS_PER_CLIENT,
    encode,
    parse_reply,
)
from cscs.daq.reader import ImageInfo, Pixels, SensorPixels

__all__ = ["DaqClient"]

_EXPECTED_DTYPE = np.dtype("<i4")


_Reply = list[zmq.Frame]


class DaqClient:
    """A connection to one DAQ server; many reads may run at once over it. A
    :class:`~cscs.daq.reader.DaqReader`.

    ``timeout``: how long to wait for a first answer (longer means the DAQ is down).
    ``stall_timeout``: how long a stream may go without a segment before it is
    declared dropped.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 10.0,
        stall_timeout: float = 5.0,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self.log = structlog.get_logger("daq-client").bind(endpoint=endpoint)
        self._context = context or zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Queue[_Reply]] = {}
        self._receiver: asyncio.Task[None] | None = None
        # Never more reads open than the server accepts from one client.
        self._read_slots = asyncio.Semaphore(MAX_READS_PER_CLIENT)

    async def __aenter__(self) -> DaqClient:
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, 0)  # bounded by reads in flight, never dropped
        self._socket.connect(self.endpoint)
        self._receiver = asyncio.create_task(self._receive(), name=f"daq-client-{self.endpoint}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver
            self._receiver = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    # ---- requests --------------------------------------------------------------------

    async def list_images(self) -> list[ImageInfo]:
        """Every image in the DAQ's buffer, oldest first."""
        body = await self._call({"op": "list"}, "", "")
        return [ImageInfo.from_wire(image) for image in body["images"]]

    async def image_info(self, image: str) -> ImageInfo:
        body = await self._call({"op": "info", "image": image}, image, "")
        return ImageInfo.from_wire(body["image"])

    async def read_sensor(self, image: str, sensor: str) -> SensorPixels:
        """All 16 segments of one detector, each checked against its checksum."""
        async with self._read_slots:
            return await self._read_sensor(image, sensor)

    async def _read_sensor(self, image: str, sensor: str) -> SensorPixels:
        request_id, replies = self._open()
        try:
            await self._send({"op": "read", "id": request_id, "image": image, "sensor": sensor})
            begin = self._header(
                await self._next(replies, self.timeout, image, sensor, None), image, sensor
            )
            self._check_layout(begin, image, sensor)
            reply = await self._next(replies, self.stall_timeout, image, sensor, begin)
            header = self._header(reply, image, sensor)
            frames = reply[2:]
            if header.get("kind") != "data" or len(frames) != len(SEGMENT_NAMES):
                raise DaqError(
                    image,
                    sensor,
                    f"protocol error: expected {len(SEGMENT_NAMES)} segment frames, "
                    f"got {len(frames)} with {header}",
                    code="protocol",
                )
            return self._verified(image, sensor, begin["checksums"], frames)
        except BaseException:
            if self._socket is not None:
                with contextlib.suppress(zmq.ZMQError):
                    await self._send({"op": "cancel", "id": request_id})
            raise
        finally:
            self._pending.pop(request_id, None)

    @staticmethod
    def _verified(
        image: str, sensor: str, expected: list[str], frames: list[zmq.Frame]
    ) -> SensorPixels:
        segments: list[Pixels] = []
        for name, want, frame in zip(SEGMENT_NAMES, expected, frames, strict=True):
            got = xxhash.xxh3_64_hexdigest(frame.buffer)
            if got != want:
                raise ChecksumMismatchError(
                    image,
                    sensor,
                    f"segment {name} is corrupt: checksum {got} != {want} sent by the DAQ",
                )
            pixels = np.frombuffer(frame.buffer, dtype=_EXPECTED_DTYPE)
            if pixels.size != SEGMENT_ROWS * SEGMENT_COLS:
                raise DaqError(
                    image,
                    sensor,
                    f"segment {name} has {pixels.size} pixels, "
                    f"expected {SEGMENT_ROWS * SEGMENT_COLS}",
                    code="protocol",
                )
            pixels.flags.writeable = False  # what was verified stays what was verified
            segments.append(pixels.reshape(SEGMENT_ROWS, SEGMENT_COLS))
        return SensorPixels(image, sensor, tuple(segments), tuple(expected))

    # ---- plumbing --------------------------------------------------------------------

    def _open(self) -> tuple[int, asyncio.Queue[_Reply]]:
        if self._socket is None:
            raise RuntimeError("DaqClient is not open; use `async with DaqClient(...)`")
        request_id = next(self._ids)
        queue: asyncio.Queue[_Reply] = asyncio.Queue()
        self._pending[request_id] = queue
        return request_id, queue

    async def _send(self, body: dict[str, Any]) -> None:
        assert self._socket is not None
        await self._socket.send_multipart([MAGIC, encode(body)])

    async def _call(self, body: dict[str, Any], image: str, sensor: str) -> dict[str, Any]:
        request_id, replies = self._open()
        try:
            await self._send(body | {"id": request_id})
            return self._header(
                await self._next(replies, self.timeout, image, sensor, None), image, sensor
            )
        finally:
            self._pending.pop(request_id, None)

    async def _next(
        self,
        replies: asyncio.Queue[_Reply],
        timeout: float,
        image: str,
        sensor: str,
        begin: dict[str, Any] | None,
    ) -> _Reply:
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel
                return await replies.get()
        except TimeoutError:
            if begin is None:
                raise DaqUnavailableError(
                    image, sensor, f"no answer from the DAQ at {self.endpoint} in {timeout:g} s"
                ) from None
            raise StreamStalledError(
                image,
                sensor,
                f"the DAQ announced the sensor but its pixels did not follow within "
                f"{timeout:g} s: link dropped or DAQ stalled",
            ) from None

    @staticmethod
    def _header(reply: _Reply, image: str, sensor: str) -> dict[str, Any]:
        try:
            body = parse_reply([f.buffer for f in reply])
        except ValueError as exc:
            raise DaqError(image, sensor, f"garbled reply: {exc}", code="protocol") from None
        if body.get("ok") is False:
            raise error_for_code(
                str(body.get("code")), image, sensor, str(body.get("message", "no reason given"))
            )
        return body

    @staticmethod
    def _check_layout(begin: dict[str, Any], image: str, sensor: str) -> None:
        layout = (begin.get("segments"), begin.get("dtype"), begin.get("shape"))
        expected = (list(SEGMENT_NAMES), _EXPECTED_DTYPE.str, [SEGMENT_ROWS, SEGMENT_COLS])
        if layout != expected:
            raise DaqError(image, sensor, f"unexpected layout {layout}", code="protocol")

    async def _receive(self) -> None:
        assert self._socket is not None
        while True:
            reply = await self._socket.recv_multipart(copy=False)
            try:
                body = parse_reply([f.buffer for f in reply[:2]])
                request_id = body.get("id")
            except ValueError as exc:
                self.log.warning("dropped a garbled DAQ reply", reason=str(exc))
                continue
            queue = self._pending.get(request_id) if isinstance(request_id, int) else None
            if queue is None:
                if body.get("ok") is False:
                    self.log.warning("DAQ error for no request", reply=body)
                continue  # a late reply to a request that timed out or was cancelled
            queue.put_nowait(reply)
