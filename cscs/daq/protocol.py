"""The DAQ wire protocol over ZeroMQ: message layout and request validation, no I/O.

Written down for people in ``docs/daq-protocol.md``. In short: a client's DEALER sends
``[MAGIC, request-json]``; the server's ROUTER answers ``[MAGIC, reply-json, *data]``.
A ``read`` is answered by a ``begin`` reply (layout and the 16 per-segment data sums,
:data:`CHECKSUM`), then one ``data`` message whose 16 frames are the segments' pixels,
sent zero-copy from the DAQ's buffer. Flow control is by reads in flight: a client may have at most
:data:`MAX_READS_PER_CLIENT` replies not yet taken off the server's socket; beyond that it
is told ``busy``, so a slow reader cannot make the server queue more (the server has
limits of its own besides, overall; the protocol document lists them).

A request is validated here, before the server acts on it, and nothing a peer sends can
make this module raise anything but :class:`RequestError` (or, for a reply,
``ValueError``): the server's promise to answer every message starts here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHECKSUM",
    "MAGIC",
    "MAX_NESTING",
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
#: The per-segment check a ``begin`` announces: each segment's FITS ``DATASUM`` (the
#: 32-bit ones'-complement sum of its native words), a JSON integer (ADR 0041).
CHECKSUM = "datasum32"
MAX_REQUEST_BYTES = 4096
MAX_READS_PER_CLIENT = 8  # concurrent reads one connection may have open
MAX_NESTING = 8  # brackets a request may open: a valid one opens exactly one
MAX_NAME_CHARS = 128  # an image or sensor name; real ones are about 20
MAX_ID = 2**63 - 1  # ids fit a signed 64-bit integer, whatever the client's language
OPS = ("list", "info", "read", "cancel")
# A JSON string, escapes included; possessive, so a stray quote costs one linear scan.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"', re.DOTALL)


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


def parse_request(frames: Sequence[bytes | memoryview]) -> Request:
    """Validate the frames after the ROUTER's peer identity; raise :class:`RequestError`.

    Every way a message can fail to decode ends here as a :class:`RequestError`: the
    server answers it and carries on. That includes what ``json`` raises besides
    ``JSONDecodeError`` (``RecursionError`` on deep nesting, ``ValueError`` on a number
    too long to convert, ``MemoryError``), so the catch below is deliberately broad.
    Frames are looked at by length before any is copied: a big one costs nothing here.
    """
    if len(frames) != 2 or len(frames[0]) != len(MAGIC) or bytes(frames[0]) != MAGIC:
        raise RequestError(f"expected 2 frames [{MAGIC.decode()}, request], got {len(frames)}")
    raw = frames[1]
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError(f"request of {len(raw)} bytes exceeds {MAX_REQUEST_BYTES}")
    try:
        body = _decode(bytes(raw))
    except RequestError:
        raise
    except Exception as exc:  # RecursionError, MemoryError, ValueError: any of them
        raise RequestError(f"request is not UTF-8 JSON: {type(exc).__name__}") from None
    return _validate(body)


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"request is not UTF-8: {exc.reason} at byte {exc.start}") from None
    # json's C decoder recurses per bracket; count them (outside strings) before it does.
    outside_strings = _JSON_STRING.sub("", text)
    if outside_strings.count("[") + outside_strings.count("{") > MAX_NESTING:
        raise RequestError(f"request opens more than {MAX_NESTING} brackets")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"request is not JSON: {exc.msg} at char {exc.pos}") from None
    if not isinstance(body, dict):
        raise RequestError(f"request must be a JSON object, got {type(body).__name__}")
    return body


def _name(body: dict[str, Any], field: str, request_id: int) -> str:
    """A name as the store spells them: short printable ASCII, safe to log and echo."""
    value = body.get(field, "")
    if not isinstance(value, str):
        raise RequestError(f"field {field!r} must be a string", request_id)
    if len(value) > MAX_NAME_CHARS or not (value.isascii() and value.isprintable()):
        raise RequestError(
            f"field {field!r} must be at most {MAX_NAME_CHARS} printable ASCII characters",
            request_id,
        )
    return value


def _validate(body: dict[str, Any]) -> Request:
    request_id = body.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 0:
        raise RequestError("field 'id' must be a non-negative integer")
    if request_id > MAX_ID:
        raise RequestError("field 'id' must be below 2**63")
    op = body.get("op")
    if not isinstance(op, str) or op not in OPS:
        shown = repr(op)[:40] if isinstance(op, str | int | float | bool | None) else "?"
        raise RequestError(f"unknown op {shown}; one of {', '.join(OPS)}", request_id)
    image = _name(body, "image", request_id)
    if op in ("info", "read") and not image:
        raise RequestError(f"{op} needs an image", request_id)
    if op == "read":
        if not isinstance(body.get("sensor"), str) or not body["sensor"]:
            raise RequestError("read needs a sensor (string)", request_id, image)
        return Read(op, request_id, image, _name(body, "sensor", request_id))
    return Request(op, request_id, image)


def error_reply(request_id: int | None, code: str, message: str, **where: str) -> list[bytes]:
    return [
        MAGIC,
        encode({"id": request_id, "ok": False, "code": code, "message": message, **where}),
    ]


def parse_reply(frames: Sequence[bytes | memoryview]) -> dict[str, Any]:
    """The JSON header of a reply (the frames after it are data); ValueError if garbled,
    whatever the garbling (a hostile server's deep nesting included)."""
    if len(frames) < 2 or len(frames[0]) != len(MAGIC) or bytes(frames[0]) != MAGIC:
        raise ValueError(f"not a DAQ reply ({len(frames)} frames)")
    try:
        body = json.loads(bytes(frames[1]))
    except Exception as exc:  # JSONDecodeError, RecursionError, MemoryError, …
        raise ValueError(f"DAQ reply header is not JSON: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise ValueError("DAQ reply header is not a JSON object")
    return body
