"""One message heard on the bus, as the EFD keeps it, and the observatory's names for it.

The observatory's EFD (Telegraf writing Kafka topics into InfluxDB 1.x) names each
measurement ``lsst.sal.{CSC}.logevent_{event}``, ``lsst.sal.{CSC}.{telemetry}``,
``lsst.sal.{CSC}.command_{command}`` and ``lsst.sal.{CSC}.ackcmd``, tags it with
``salIndex``, and keeps the fields as published plus ``private_sndStamp`` (the sender's
TAI), ``private_rcvStamp`` (the receiver's TAI) and ``private_seqNum``. The same names
here let an astronomer's existing InfluxQL queries run unchanged against this EFD.

Pure: no I/O. What is kept of a payload is bounded (:data:`MAX_FIELDS`,
:data:`MAX_TEXT`), because anyone on the network can publish anything.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from cscs.core.topics import Kind

__all__ = [
    "MAX_FIELDS",
    "MAX_TEXT",
    "EfdRecord",
    "Measurement",
    "flatten_fields",
    "measurement_name",
    "parse_measurement",
]

MAX_FIELDS = 256  # fields kept of one payload; the rest dropped (the record says so)
MAX_TEXT = 16_384  # characters of one text field kept

#: Payload keys that become the ``private_*`` fields rather than fields of their own.
ENVELOPE = frozenset({"seq", "sent_tai"})

_MEASUREMENT = re.compile(
    r"lsst\.sal\.(?P<csc>[A-Za-z][A-Za-z0-9_]*)\."
    r"(?:(?P<ack>ackcmd)|logevent_(?P<evt>\w+)|command_(?P<cmd>\w+)|(?P<tel>\w+))"
)


@dataclass(frozen=True, order=True)
class Measurement:
    """Which topic of which CSC: the parts of an EFD measurement name."""

    csc: str
    kind: Kind
    name: str  # event, telemetry topic or command; "ackcmd" for acknowledgements

    def __str__(self) -> str:
        return measurement_name(self.csc, self.kind, self.name)


def measurement_name(csc: str, kind: Kind, name: str) -> str:
    """The EFD's measurement name of ``csc``'s ``kind`` topic ``name``."""
    if kind is Kind.EVENT:
        return f"lsst.sal.{csc}.logevent_{name}"
    if kind is Kind.COMMAND:
        return f"lsst.sal.{csc}.command_{name}"
    if kind is Kind.ACK:
        return f"lsst.sal.{csc}.ackcmd"
    return f"lsst.sal.{csc}.{name}"


def parse_measurement(text: str) -> Measurement | None:
    """The parts of an EFD measurement name, or None when ``text`` is not one."""
    match = _MEASUREMENT.fullmatch(text)
    if match is None:
        return None
    csc = match["csc"]
    if match["ack"]:
        return Measurement(csc, Kind.ACK, "ackcmd")
    if match["evt"]:
        return Measurement(csc, Kind.EVENT, match["evt"])
    if match["cmd"]:
        return Measurement(csc, Kind.COMMAND, match["cmd"])
    return Measurement(csc, Kind.TELEMETRY, match["tel"])


def _scalar(value: Any) -> bool | int | float | str | None:
    """A value a field can hold: numbers and text as they are (text cut to
    :data:`MAX_TEXT`), anything else (an object, a number beyond 64 bits, NaN) as JSON
    text, so nothing is refused and nothing is invented."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)[:MAX_TEXT]
    if isinstance(value, float):
        return value if math.isfinite(value) else json.dumps(value)
    if isinstance(value, str):
        return value[:MAX_TEXT]
    return json.dumps(value, separators=(",", ":"), default=str)[:MAX_TEXT]


def flatten_fields(payload: dict[str, Any]) -> dict[str, bool | int | float | str | None]:
    """The fields of ``payload`` as the EFD keeps them: the envelope (``seq``,
    ``sent_tai``) left out (they are the record's own), a list of scalars as ``name0``,
    ``name1``… (as the observatory's EFD flattens arrays), at most :data:`MAX_FIELDS`."""
    out: dict[str, bool | int | float | str | None] = {}
    for key, value in payload.items():
        if len(out) >= MAX_FIELDS:
            break
        if key in ENVELOPE or not isinstance(key, str):
            continue
        if isinstance(value, list) and all(
            v is None or isinstance(v, bool | int | float | str) for v in value
        ):
            for i, item in enumerate(value[: MAX_FIELDS - len(out)]):
                out[f"{key}{i}"] = _scalar(item)
            continue
        out[key] = _scalar(value)
    return out


@dataclass(frozen=True)
class EfdRecord:
    """One message as recorded: where it was heard, when, and what it said.

    ``(measurement, index, seq, sent_tai)`` identifies a message: two writers that heard
    the same message record the same key, and a store keeps one of them."""

    measurement: Measurement
    index: int  # the CSC's index: the tag salIndex
    seq: int  # private_seqNum: the topic's counter (a command's: its commander's)
    sent_tai: float  # private_sndStamp: the sender's TAI, Unix seconds
    received_tai: float  # private_rcvStamp: the writer's TAI when it heard the message
    fields: dict[str, bool | int | float | str | None] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, int, float]:
        return (str(self.measurement), self.index, self.seq, self.sent_tai)
