"""How an EFD record becomes an InfluxDB 1.x point and back, and how InfluxQL is quoted:
the pure half of :mod:`cscs.efd.influx_store` (no I/O, unit-tested without a server).

The point's timestamp is the UTC time of ``sent_tai`` (InfluxDB times are UTC, and the
observatory's EFD is queried with UTC times), to the microsecond, plus ``seq % 1000``
nanoseconds. A point is identified by measurement, tags and timestamp: two messages
sent in the same microsecond on one topic differ in ``seq`` and both stay, and one
message written twice (two writers, a retried batch) lands on itself, so InfluxDB keeps
it once. That is the store's deduplication on ``(measurement, salIndex, seq, sent_tai)``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from cscs.core.tai import tai_minus_utc
from cscs.efd.records import EfdRecord, Measurement

__all__ = [
    "DROPPED",
    "PRIVATE",
    "TAG",
    "coerce",
    "influx_time_ns",
    "keepable_name",
    "parse_type_conflict",
    "quote_ident",
    "record_of",
    "to_line",
    "to_point",
]

TAG = "salIndex"
SND, RCV, SEQ = "private_sndStamp", "private_rcvStamp", "private_seqNum"
#: A text field listing (JSON) the names of fields InfluxDB could not keep for a record.
DROPPED = "private_dropped"
PRIVATE = frozenset({SND, RCV, SEQ})
_NS = 1_000_000_000
_LATEST = 9_000_000_000  # s: within InfluxDB's time range (±2**63 ns)

# InfluxDB 1.x line protocol cannot carry a backslash or a control character in a key
# exactly ("x\" is unparseable, a leading tab is taken for the separator), and refuses a
# field named "time". Such names are not stored; the record
# lists them in DROPPED.
_UNKEEPABLE = re.compile(r"[\\\x00-\x1f\x7f]")


def keepable_name(name: str) -> bool:
    """Whether InfluxDB can keep ``name`` (a field or measurement name) exactly."""
    return bool(name) and name != "time" and not _UNKEEPABLE.search(name)


def quote_ident(name: str) -> str:
    """``name`` as an InfluxQL identifier: double-quoted, ``\\`` and ``"`` escaped, so that
    no name (however it came off the bus) can end the identifier and add to a query."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def influx_time_ns(sent_tai: float, seq: int) -> int:
    """The point's timestamp (ns since the Unix epoch, UTC) of a message."""
    utc = sent_tai - tai_minus_utc(sent_tai - tai_minus_utc(sent_tai))
    return round(utc * 1_000_000) * 1000 + seq % 1000


def utc_bound_ns(tai: float, *, upper: bool) -> int:
    """A timestamp bound covering every point sent at or before/after ``tai`` (with a
    margin for leap seconds and rounding; the exact cut is on ``private_sndStamp``)."""
    # InfluxDB's times span 1677-2262: a bound beyond (or infinite) is its end.
    if not tai < _LATEST:
        return _LATEST * _NS
    if not tai > -_LATEST:
        return -_LATEST * _NS
    if upper:
        return influx_time_ns(tai, 0) + 2 * _NS
    return influx_time_ns(tai, 0) - 2 * _NS


def _value(value: bool | int | float | str) -> str:
    """A field value in line protocol. Text is escaped here rather than by the client,
    whose escaping turns a line break into the two characters backslash and n."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(name: str) -> str:
    """A measurement or field name in line protocol (no backslash: :func:`keepable_name`)."""
    return name.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def to_line(point: dict[str, Any]) -> str:
    """``point`` (of :func:`to_point`) in InfluxDB's line protocol."""
    fields = ",".join(f"{_key(k)}={_value(v)}" for k, v in point["fields"].items())
    measurement = point["measurement"].replace(",", "\\,").replace(" ", "\\ ")
    return f"{measurement},{TAG}={int(point['tags'][TAG])} {fields} {point['time']}"


def to_point(record: EfdRecord) -> dict[str, Any]:
    """The point of ``record`` for ``InfluxDBClient.write_points`` (time in ns)."""
    fields: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in record.fields.items():
        if name in PRIVATE or name in (DROPPED, TAG):
            continue  # the record's own envelope wins over a payload field of that name
        if not keepable_name(name):
            dropped.append(name)
        elif isinstance(value, float) and not math.isfinite(value):
            fields[name] = json.dumps(value)  # as flatten_fields keeps it: InfluxDB has no NaN
        elif isinstance(value, int) and not -(2**63) <= value < 2**63:
            fields[name] = str(value)  # idem: beyond InfluxDB's 64-bit integers
        elif value is not None:  # InfluxDB has no null: an absent field reads as null
            fields[name] = value
    fields[SND] = float(record.sent_tai)
    fields[RCV] = float(record.received_tai)
    fields[SEQ] = int(record.seq)
    # salIndex is a tag (series per index) and, as in the observatory's EFD, an integer
    # field too: its users write "WHERE salIndex = 1", which matches a field, not a tag.
    fields[TAG] = int(record.index)
    if dropped:
        fields[DROPPED] = json.dumps(dropped)
    return {
        "measurement": str(record.measurement),
        "tags": {TAG: str(record.index)},
        "time": influx_time_ns(record.sent_tai, record.seq),
        "fields": fields,
    }


def record_of(measurement: Measurement, row: dict[str, Any]) -> EfdRecord | None:
    """The record of one row of ``SELECT *`` (None when it is not a record of ours)."""
    try:
        sent = float(row[SND])
        received = float(row[RCV]) if row.get(RCV) is not None else sent
        seq = int(row[SEQ])
        index = int(row[TAG])
    except (KeyError, TypeError, ValueError):
        return None
    fields = {
        name: value
        for name, value in row.items()
        # SELECT * names the tag salIndex_1 beside the field salIndex.
        if name not in PRIVATE and name not in ("time", TAG, f"{TAG}_1") and value is not None
    }
    return EfdRecord(measurement, index, seq, sent, received, fields)


_CONFLICT = re.compile(
    r'field type conflict: input field \\?"(?P<field>(?:[^"\\]|\\.)*)\\?" on measurement '
    r'\\?"(?P<measurement>(?:[^"\\]|\\.)*)\\?" is type \w+, already exists as type (?P<type>\w+)'
)


def parse_type_conflict(message: str) -> tuple[str, str, str] | None:
    """(measurement, field, the type InfluxDB has) of a "field type conflict" error."""
    match = _CONFLICT.search(message)
    if match is None:
        return None
    return _unescape(match["measurement"]), _unescape(match["field"]), match["type"]


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _as_type(value: Any, kind: str) -> tuple[bool, Any]:
    """``value`` as InfluxDB's ``kind``, when that loses nothing: (converted, value)."""
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        as_float = float(value)
        return (int(as_float) == value, as_float)
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return (-(2**63) <= value < 2**63, int(value))
    if kind == "string" and isinstance(value, bool | int | float):
        return (math.isfinite(value), json.dumps(value))
    return (False, value)


def coerce(points: Iterable[dict[str, Any]], measurement: str, field: str, kind: str) -> None:
    """Make ``field`` of ``measurement`` InfluxDB's ``kind`` in ``points`` (in place):
    converted where nothing is lost (an integer into a float field), otherwise left out
    of the point and named in its DROPPED field. InfluxDB fixes a field's type with its
    first value; a later publisher sending another type must not lose the whole batch."""
    for point in points:
        if point["measurement"] != measurement or field not in point["fields"]:
            continue
        fields = point["fields"]
        ok, value = _as_type(fields[field], kind)
        if ok:
            fields[field] = value
            continue
        del fields[field]
        names = json.loads(fields.get(DROPPED, "[]"))
        fields[DROPPED] = json.dumps([*names, field])
