"""The DAQ wire protocol over ZeroMQ: message layout and request validation, no I/O.

Written down for people in ``docs/daq-protocol.md``. In short: a client's DEALER sends
``[MAGIC, request-json]``; the server's ROUTER answers ``[MAGIC, reply-json, *data]``.
A ``read`` is answered by a ``begin`` reply (layout and the 16 per-segment checksums),
then one ``data`` message whose 16 frames are the segments' pixels, sent zero-copy from
the DAQ's buffer. Flow control is by reads in flight: a client may have at most
:data:`MAX_READS_PER_CLIENT` replies not yet taken off the server's socket; beyond that it
is told ``busy``, so a slow reader cannot make the server queue more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAGIC",
    "MAX_READS_PER_CLIENT",
    "MAX_REQUEST_BYTES",
    "Read",
    "Request",
    "encode",
    "error_reply",
    "parse_reply",
    "parse_request",
]

MAGIC = b"DAQ1"
MAX_REQUEST_BYTES = 4096
MAX_READS_PER_CLIENT = 8  # concurrent reads one connection may have open
OPS = ("list", "info", "read", "cancel")


@dataclass(frozen=True)
class Request:
    """``list`` (no image), ``info`` (image) or ``cancel`` (stops read ``id``)."""

    op: str
    id: int
    image: str = ""


@dataclass(frozen=True)
class Read(Request):
    sensor: str = ""


class RequestError(ValueError):
    """A request the server cannot act on; ``id`` is None when it could not be read."""

    def __init__(self, message: str, request_id: int | None = None, image: str = "") -> None:
        super().__init__(message)
        self.request_id = request_id
        self.image = image


def encode(header: dict[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode()


def parse_request(frames: list[bytes]) -> Request:
    """Validate the frames after the ROUTER's peer identity; raise :class:`RequestError`."""
    if len(frames) != 2 or frames[0] != MAGIC:
        raise RequestError(f"expected 2 frames [{MAGIC.decode()}, request], got {len(frames)}")
    raw = frames[1]
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError(f"request of {len(raw)} bytes exceeds {MAX_REQUEST_BYTES}")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"request is not UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("request must be a JSON object")
    request_id = body.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 0:
        raise RequestError("field 'id' must be a non-negative integer")
    op = body.get("op")
    if op not in OPS:
        raise RequestError(f"unknown op {op!r}; one of {', '.join(OPS)}", request_id)
    image = body.get("image", "")
    if not isinstance(image, str):
        raise RequestError("field 'image' must be a string", request_id)
    if op in ("info", "read") and not image:
        raise RequestError(f"{op} needs an image", request_id)
    if op == "read":
        sensor = body.get("sensor")
        if not isinstance(sensor, str) or not sensor:
            raise RequestError("read needs a sensor (string)", request_id, image)
        return Read(op, request_id, image, sensor)
    return Request(op, request_id, image)


def error_reply(request_id: int | None, code: str, message: str, **where: str) -> list[bytes]:
    return [
        MAGIC,
        encode({"id": request_id, "ok": False, "code": code, "message": message, **where}),
    ]


def parse_reply(frames: list[bytes] | list[memoryview]) -> dict[str, Any]:
    """The JSON header of a reply (the frames after it are data); ValueError if garbled."""
    if len(frames) < 2 or bytes(frames[0]) != MAGIC:
        raise ValueError(f"not a DAQ reply ({len(frames)} frames)")
    body = json.loads(bytes(frames[1]))
    if not isinstance(body, dict):
        raise ValueError("DAQ reply header is not a JSON object")
    return body
