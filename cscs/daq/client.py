"""The DAQ client library: what the archiver uses to list images and read pixels.

Every read is checked: the stream must deliver all 16 segments, of the announced layout,
without stalling, with 16 well-formed data sums, and every failure raises a
:class:`~cscs.daq.errors.DaqError` naming the image, the sensor and the cause. Pixels
arrive as read-only numpy views on ZeroMQ's receive buffers: no copy is made, and no
pass over them here. Each segment's sum (its FITS ``DATASUM``, ADR 0041) travels with
it in :class:`~cscs.daq.reader.SensorPixels`, to be checked in the pass that uses the
pixels: the raw writer's, or :meth:`~cscs.daq.reader.SensorPixels.verify`.

What a DAQ sends is bounded before it is kept (:mod:`~cscs.daq.replies`): no frame over
:data:`~cscs.daq.replies.MAX_FRAME_BYTES` is taken off the connection, a large header is
parsed on a worker thread, a listing is capped and de-duplicated, and a peer's error
text is cut short and made printable before it goes into an exception or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
import zmq
import zmq.asyncio

from cscs.camera.datasums import MAX_DATASUM
from cscs.camera.geometry import SEGMENT_COLS, SEGMENT_NAMES, SEGMENT_ROWS
from cscs.camera.memory import release_freed_memory
from cscs.core.logs import Throttle
from cscs.daq.errors import (
    DaqError,
    DaqUnavailableError,
    StreamStalledError,
    error_for_code,
)
from cscs.daq.protocol import (
    CHECKSUM,
    MAGIC,
    MAX_READS_PER_CLIENT,
    encode,
    parse_reply,
)
from cscs.daq.reader import ImageInfo, Pixels, SensorPixels
from cscs.daq.replies import (
    MAX_FRAME_BYTES,
    MAX_REPLY_HEADER_BYTES,
    Listing,
    error_text,
    read_listing,
)

__all__ = ["DaqClient"]

_EXPECTED_DTYPE = np.dtype("<i4")


# A header this big is parsed on a worker thread, not on the event loop.
_PARSE_ON_LOOP_BYTES = 64 * 1024
_TRIM_AFTER_LISTING = 1000  # entries, beyond which the allocator is trimmed after a listing


@dataclass(frozen=True)
class _Reply:
    body: dict[str, Any]
    frames: list[zmq.Frame]  # after the header: a data message's segments


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
        self._heard = 0.0  # loop time of the last message received
        self._unsolicited = Throttle()  # error replies for no request: one line per 10 s

    async def __aenter__(self) -> DaqClient:
        self._connect()
        return self

    def _connect(self) -> None:
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, 0)  # bounded by reads in flight, never dropped
        # No frame bigger than the protocol allows is taken in: ZeroMQ drops the
        # connection instead (and, as for any protocol error, never reconnects it:
        # :meth:`_reconnect_if_silent` does), and the request waiting for it times out.
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self._socket.connect(self.endpoint)
        self._heard = asyncio.get_running_loop().time()
        self._receiver = asyncio.create_task(self._receive(), name=f"daq-client-{self.endpoint}")

    async def _reconnect_if_silent(self, since: float) -> None:
        """A new connection if nothing at all has arrived since ``since`` (a request
        went unanswered for its whole timeout): ZeroMQ ends a connection for good on a
        protocol error (a frame over the limit), and a DEALER without one waits for
        ever. Replies still due on the old connection are lost; their reads time out."""
        if self._socket is None or self._heard > since:
            return
        self.log.warning("nothing heard from the DAQ: connecting again")
        self._heard = asyncio.get_running_loop().time()  # once, for all who waited
        receiver, socket = self._receiver, self._socket
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        socket.close(linger=0)
        self._connect()

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
        """Every image in the DAQ's buffer, oldest first: at most
        :data:`~cscs.daq.replies.MAX_LISTED_IMAGES`, each once (what was left out is
        logged in one line)."""
        body = await self._call({"op": "list"}, "", "")
        try:
            listing = await asyncio.to_thread(read_listing, body)
        except ValueError as exc:
            raise DaqError("", "", f"garbled listing: {exc}", code="protocol") from None
        finally:
            del body
        if listing.listed > _TRIM_AFTER_LISTING:
            # The parsed reply (tens of MB of small objects for a long one) is freed
            # now: hand the memory back rather than keep it for the process's life.
            await asyncio.to_thread(release_freed_memory)
        if listing.trimmed:
            self._log_trimmed(listing)
        return listing.images

    async def image_info(self, image: str) -> ImageInfo:
        body = await self._call({"op": "info", "image": image}, image, "")
        listing = read_listing({"images": [body.get("image")]})
        if not listing.images:
            raise DaqError(image, "", "garbled image description", code="protocol")
        return listing.images[0]

    def _log_trimmed(self, listing: Listing) -> None:
        self.log.warning(
            "the DAQ's listing was trimmed", listed=listing.listed, kept=len(listing.images),
            duplicates=listing.duplicates, unreadable=listing.unreadable,
            beyond_limit=listing.beyond_limit,
        )  # fmt: skip

    async def read_sensor(self, image: str, sensor: str) -> SensorPixels:
        """All 16 segments of one detector, and the data sums the DAQ sent for them."""
        async with self._read_slots:
            return await self._read_sensor(image, sensor)

    async def _read_sensor(self, image: str, sensor: str) -> SensorPixels:
        request_id, replies = self._open()
        try:
            await self._send({"op": "read", "id": request_id, "image": image, "sensor": sensor})
            begin = self._checked(
                await self._next(replies, self.timeout, image, sensor, None), image, sensor
            )
            self._check_layout(begin, image, sensor)
            reply = await self._next(replies, self.stall_timeout, image, sensor, begin)
            header = self._checked(reply, image, sensor)
            frames = reply.frames
            if header.get("kind") != "data" or len(frames) != len(SEGMENT_NAMES):
                raise DaqError(
                    image,
                    sensor,
                    f"protocol error: expected {len(SEGMENT_NAMES)} segment frames, "
                    f"got {len(frames)} with {header}",
                    code="protocol",
                )
            return self._pixels(image, sensor, begin["checksums"], frames)
        except BaseException:
            if self._socket is not None:
                with contextlib.suppress(zmq.ZMQError):
                    await self._send({"op": "cancel", "id": request_id})
            raise
        finally:
            self._pending.pop(request_id, None)

    @staticmethod
    def _pixels(
        image: str, sensor: str, datasums: list[int], frames: list[zmq.Frame]
    ) -> SensorPixels:
        segments: list[Pixels] = []
        for name, frame in zip(SEGMENT_NAMES, frames, strict=True):
            pixels = np.frombuffer(frame.buffer, dtype=_EXPECTED_DTYPE)
            if pixels.size != SEGMENT_ROWS * SEGMENT_COLS:
                raise DaqError(
                    image,
                    sensor,
                    f"segment {name} has {pixels.size} pixels, "
                    f"expected {SEGMENT_ROWS * SEGMENT_COLS}",
                    code="protocol",
                )
            pixels.flags.writeable = False  # what is verified stays what was verified
            segments.append(pixels.reshape(SEGMENT_ROWS, SEGMENT_COLS))
        return SensorPixels(image, sensor, tuple(segments), tuple(datasums))

    # ---- plumbing --------------------------------------------------------------------

    def _open(self) -> tuple[int, asyncio.Queue[_Reply]]:
        if self._socket is None:
            raise RuntimeError("DaqClient is not open; use `async with DaqClient(...)`")
        request_id = next(self._ids)
        queue: asyncio.Queue[_Reply] = asyncio.Queue()
        self._pending[request_id] = queue
        return request_id, queue

    async def _send(self, body: dict[str, Any]) -> None:
        socket = self._socket
        assert socket is not None
        asked = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.timeout):  # no connection: a DEALER waits
                await socket.send_multipart([MAGIC, encode(body)])
        except asyncio.CancelledError:
            # pyzmq cancels the sends still waiting on a socket that is closed: when
            # :meth:`_reconnect_if_silent` replaced it (and nobody cancelled this task),
            # that is a DAQ that could not be reached, for the caller to handle as one.
            task = asyncio.current_task()
            if socket is self._socket or (task is not None and task.cancelling()):
                raise
            raise DaqUnavailableError(
                str(body.get("image", "")), str(body.get("sensor", "")),
                f"the connection to the DAQ at {self.endpoint} was replaced while sending",
            ) from None  # fmt: skip
        except TimeoutError:
            await self._reconnect_if_silent(asked)
            raise DaqUnavailableError(
                str(body.get("image", "")), str(body.get("sensor", "")),
                f"cannot send to the DAQ at {self.endpoint}: no connection in {self.timeout:g} s",
            ) from None  # fmt: skip

    async def _call(self, body: dict[str, Any], image: str, sensor: str) -> dict[str, Any]:
        request_id, replies = self._open()
        try:
            await self._send(body | {"id": request_id})
            return self._checked(
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
        asked = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel
                return await replies.get()
        except TimeoutError:
            await self._reconnect_if_silent(asked)
            if begin is None:
                raise DaqUnavailableError(
                    image,
                    sensor,
                    f"no answer from the DAQ at {self.endpoint} in {timeout:g} s"
                    f" (a reply with a frame over {MAX_FRAME_BYTES} bytes is refused unread)",
                ) from None
            raise StreamStalledError(
                image,
                sensor,
                f"the DAQ announced the sensor but its pixels did not follow within "
                f"{timeout:g} s: link dropped or DAQ stalled",
            ) from None

    @staticmethod
    def _checked(reply: _Reply, image: str, sensor: str) -> dict[str, Any]:
        """The reply's header; the DaqError it reports, its text bounded."""
        body = reply.body
        if body.get("ok") is False:
            code, message = error_text(body)
            raise error_for_code(code, image, sensor, message)
        return body

    @staticmethod
    def _check_layout(begin: dict[str, Any], image: str, sensor: str) -> None:
        layout = (begin.get("segments"), begin.get("dtype"), begin.get("shape"))
        expected = (list(SEGMENT_NAMES), _EXPECTED_DTYPE.str, [SEGMENT_ROWS, SEGMENT_COLS])
        if layout != expected:
            raise DaqError(image, sensor, f"unexpected layout {layout}", code="protocol")
        sums = begin.get("checksums")
        if begin.get("checksum") != CHECKSUM or not _are_datasums(sums):
            shown = repr(begin.get("checksum"))[:40]
            raise DaqError(
                image, sensor,
                f"expected checksum {CHECKSUM!r} and {len(SEGMENT_NAMES)} integer sums in "
                f"0..{MAX_DATASUM}, got {shown} and {repr(sums)[:80]}",
                code="protocol",
            )  # fmt: skip

    async def _receive(self) -> None:
        assert self._socket is not None
        while True:
            reply = await self._socket.recv_multipart(copy=False)
            self._heard = asyncio.get_running_loop().time()
            try:
                body = await _parse_header(reply)
                request_id = body.get("id")
            except ValueError as exc:
                self.log.warning("dropped a garbled DAQ reply", reason=str(exc))
                continue
            queue = self._pending.get(request_id) if isinstance(request_id, int) else None
            if queue is None:
                if body.get("ok") is False:
                    code, message = error_text(body)
                    self._unsolicited.warning(self.log, "DAQ error for no request",
                                              code=code, message=message)  # fmt: skip
                continue  # a late reply to a request that timed out or was cancelled
            queue.put_nowait(_Reply(body, reply[2:]))


def _are_datasums(sums: object) -> bool:
    """16 data sums, each a JSON integer (not a boolean, not a float) of 32 bits."""
    return (
        isinstance(sums, list)
        and len(sums) == len(SEGMENT_NAMES)
        and all(type(v) is int and 0 <= v <= MAX_DATASUM for v in sums)
    )


async def _parse_header(reply: list[zmq.Frame]) -> dict[str, Any]:
    """The reply's JSON header, refused unread beyond MAX_REPLY_HEADER_BYTES and parsed
    on a worker thread when large; ValueError if garbled."""
    frames = [f.buffer for f in reply[:2]]
    if len(frames) == 2 and len(frames[1]) > MAX_REPLY_HEADER_BYTES:
        raise ValueError(f"reply header of {len(frames[1])} bytes exceeds {MAX_REPLY_HEADER_BYTES}")
    if len(frames) == 2 and len(frames[1]) > _PARSE_ON_LOOP_BYTES:
        return await asyncio.to_thread(parse_reply, frames)
    return parse_reply(frames)
