"""What a DAQ's replies may weigh and hold, checked before the archiver keeps any of it.

A DAQ is trusted to list and serve pixels, not to size its answers: a hostile or broken
one could answer ``list`` with 84 MB of JSON, an error with a 5 MB message, a listing
with the same image a hundred thousand times (issue 29). The bounds come from the
protocol itself (``docs/daq-protocol.md``, "Limits"):

* the largest legitimate frame is one segment's pixels (:data:`SEGMENT_BYTES`); a reply's
  JSON header is at most :data:`MAX_REPLY_HEADER_BYTES`, which holds a listing of some
  1600 full LSSTCam images (~2.6 kB each; more of the smaller cameras, up to
  :data:`MAX_LISTED_IMAGES`; a bigger buffer would need paging). The client's socket
  refuses any bigger frame (``ZMQ_MAXMSGSIZE`` = :data:`MAX_FRAME_BYTES`: ZeroMQ drops
  the connection);
* a listing keeps at most :data:`MAX_LISTED_IMAGES` images, each named once, each with
  at most :data:`MAX_SENSORS_PER_IMAGE` sensors named once, every name short printable
  ASCII; entries that are not so are skipped and counted;
* an error's text is cut to :data:`MAX_MESSAGE_CHARS` printable characters.

No I/O here: the client calls these (the big ones on a worker thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cscs.camera.geometry import SEGMENT_BYTES
from cscs.core.text import peer_text
from cscs.daq.protocol import MAX_NAME_CHARS
from cscs.daq.reader import ImageInfo

__all__ = [
    "MAX_CODE_CHARS",
    "MAX_FRAME_BYTES",
    "MAX_LISTED_IMAGES",
    "MAX_MESSAGE_CHARS",
    "MAX_REPLY_HEADER_BYTES",
    "MAX_SENSORS_PER_IMAGE",
    "Listing",
    "error_text",
    "read_listing",
]

MAX_LISTED_IMAGES = 4096
"""Images one listing may name: days of a full camera's buffer (the DAQ evicts)."""
MAX_SENSORS_PER_IMAGE = 256
"""LSSTCam has 205 (189 science, 8 guider, 8 wavefront half-sensors)."""
MAX_REPLY_HEADER_BYTES = 4 * 2**20
"""A reply's JSON header: a full listing of LSSTCam images is ~2.6 kB per image."""
MAX_FRAME_BYTES = max(MAX_REPLY_HEADER_BYTES, SEGMENT_BYTES)
"""The largest frame a DAQ client accepts (``ZMQ_MAXMSGSIZE``)."""
MAX_MESSAGE_CHARS = 300
"""An error reply's ``message``, as passed on (into exceptions, events and logs)."""
MAX_CODE_CHARS = 40


@dataclass(frozen=True)
class Listing:
    """The images a listing named, bounded and de-duplicated, oldest first, and what was
    left out of it (for one log line)."""

    images: list[ImageInfo]
    listed: int
    """entries the DAQ sent"""
    duplicates: int = 0
    unreadable: int = 0
    beyond_limit: int = 0

    @property
    def trimmed(self) -> bool:
        return bool(self.duplicates or self.unreadable or self.beyond_limit)


def read_listing(body: dict[str, Any]) -> Listing:
    """The images of a ``list`` reply; ValueError when it holds no list of images.
    Linear in the listing's length, whatever it holds."""
    entries = body.get("images")
    if not isinstance(entries, list):
        raise ValueError(f"a list reply's 'images' is not a list: {type(entries).__name__}")
    images: dict[str, ImageInfo] = {}
    duplicates = unreadable = beyond = 0
    for entry in entries:
        try:
            image = _image(entry)
        except (TypeError, ValueError, KeyError, OverflowError):
            unreadable += 1
            continue
        if image.name in images:
            duplicates += 1
        elif len(images) >= MAX_LISTED_IMAGES:
            beyond += 1
        else:
            images[image.name] = image
    return Listing(list(images.values()), len(entries), duplicates, unreadable, beyond)


def error_text(body: dict[str, Any]) -> tuple[str, str]:
    """(code, message) of an error reply, each bounded and printable."""
    code = body.get("code")
    message = body.get("message")
    return (
        peer_text(code if isinstance(code, str) else repr(code)[:MAX_CODE_CHARS], MAX_CODE_CHARS),
        peer_text(message, MAX_MESSAGE_CHARS) if isinstance(message, str) else "no reason given",
    )


def _name(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise ValueError("not a name")
    if not (value.isascii() and value.isprintable()):
        raise ValueError("not a printable ASCII name")
    return value


def _image(entry: object) -> ImageInfo:
    if not isinstance(entry, dict):
        raise TypeError("an image is not an object")
    sensors = entry["sensors"]
    missing = entry.get("missingSensors", [])
    if not isinstance(sensors, list) or not isinstance(missing, list):
        raise TypeError("sensors are not a list")
    if len(sensors) > MAX_SENSORS_PER_IMAGE or len(missing) > MAX_SENSORS_PER_IMAGE:
        raise ValueError("too many sensors")
    metadata = entry.get("metadata", {})
    complete, size = entry["complete"], entry["byteSize"]
    if not isinstance(complete, bool) or not isinstance(metadata, dict):
        raise TypeError("complete or metadata of the wrong type")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError("byteSize is not a count")
    return ImageInfo(
        name=_name(entry["name"]),
        sensors=tuple(dict.fromkeys(_name(s) for s in sensors)),
        missing_sensors=tuple(dict.fromkeys(_name(s) for s in missing)),
        complete=complete,
        byte_size=size,
        metadata=metadata,
    )
