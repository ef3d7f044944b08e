"""One message heard on the bus as an :class:`~cscs.efd.records.EfdRecord`, or the
reason it is not recorded. Pure: no I/O, nothing trusted.

What is recorded (docs/efd.md):

* ``{prefix}/{CSC}/{index}/evt/{event}``, ``.../tel/{topic}``: the payload's fields;
  ``seq`` and ``sent_tai`` are the record's own.
* ``.../cmd/{command}``: the ``params`` object's fields plus ``private_origin`` and
  ``private_identity`` (who sent it, on whose behalf); ``seq`` is the commander's.
* ``.../ack``: the payload's fields (``origin``, ``command``, ``ack``, ``code``…).
* ``{dm}/qc/{instrument}/{image}`` as CSC ``DM``, event ``imageQuality``;
  ``{dm}/qc/{instrument}/{image}/{sensor}`` as ``sensorQuality``; ``{dm}/status/{stage}``
  as ``processingStatus``; index 0, and the topic's parts (``instrument``,
  ``imageName``, ``sensor``, ``stage``) as fields where the payload lacks them.

A JSON object whose ``seq`` or ``sent_tai`` is missing or unusable is still recorded
(what was said matters more than its envelope): ``seq`` 0, ``sent_tai`` the time it was
received, and the field ``private_efdFlag`` saying what was wrong. Anything else (not
UTF-8 JSON, not an object, too large, not a topic of the ICD) is refused with a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cscs.core.protocol import decode_json_object
from cscs.core.topics import Kind, parse_topic
from cscs.efd.records import MAX_FIELDS, MAX_TEXT, EfdRecord, Measurement, flatten_fields
from cscs.efd_writer.interface import DM_CSC

__all__ = ["FLAG_FIELD", "LATEST_TAI", "Refused", "to_record"]

FLAG_FIELD = "private_efdFlag"
_MAX_SEQ = 2**63 - 1
_DM_PART = 200  # characters kept of a DM topic's part (instrument, image, sensor, stage)
#: The latest ``sent_tai`` taken as a time (year 2255): InfluxDB's times end at 2**63 ns
#: (2262), and one record a store cannot take would hold every record behind it.
LATEST_TAI = 9_000_000_000.0


@dataclass(frozen=True)
class Refused:
    reason: str


def to_record(
    topic: str,
    payload: bytes,
    *,
    prefix: str,
    dm_prefix: str,
    received_tai: float,
    max_bytes: int,
) -> EfdRecord | Refused:
    """The record of one message, or why it is not recorded."""
    if len(payload) > max_bytes:
        return Refused(f"{len(payload)} bytes, more than {max_bytes}")
    where = _where(topic, prefix, dm_prefix)
    if isinstance(where, Refused):
        return where
    measurement, index, topic_fields = where
    try:
        data = decode_json_object(payload)
    except ValueError as exc:
        return Refused(str(exc))
    flags: list[str] = []
    seq = _seq(data.get("seq"), flags)
    sent_tai = _sent_tai(data.get("sent_tai"), received_tai, flags)
    if measurement.kind is Kind.COMMAND:
        params = data.get("params", {})
        if not isinstance(params, dict):
            flags.append("params not an object")
            params = {"params": params}
        fields = flatten_fields(params)
        for name in ("origin", "identity"):
            value = data.get(name)
            fields[f"private_{name}"] = value[:MAX_TEXT] if isinstance(value, str) else None
    else:
        fields = flatten_fields(data)
    for name, value in topic_fields.items():
        if len(fields) < MAX_FIELDS:
            fields.setdefault(name, value)
    if flags:
        fields[FLAG_FIELD] = "; ".join(flags)
    return EfdRecord(measurement, index, seq, sent_tai, received_tai, fields)


def _where(
    topic: str, prefix: str, dm_prefix: str
) -> tuple[Measurement, int, dict[str, str]] | Refused:
    parsed = parse_topic(topic)
    if parsed is not None and parsed.address.prefix == prefix:
        name = "ackcmd" if parsed.kind is Kind.ACK else parsed.name
        if not name.isidentifier() or not name.isascii():
            return Refused("the topic's last level is not a name")
        if not 0 <= parsed.address.index <= _MAX_SEQ:
            return Refused("the index is out of range")
        return Measurement(parsed.address.name, parsed.kind, name), parsed.address.index, {}
    parts = topic.split("/")
    if parts[0] == dm_prefix and all(parts[1:]) and len(topic) <= 1024:
        if parts[1] == "qc" and len(parts) == 4:
            fields = {"instrument": parts[2][:_DM_PART], "imageName": parts[3][:_DM_PART]}
            return Measurement(DM_CSC, Kind.EVENT, "imageQuality"), 0, fields
        if parts[1] == "qc" and len(parts) == 5:
            fields = {"instrument": parts[2][:_DM_PART], "imageName": parts[3][:_DM_PART],
                      "sensor": parts[4][:_DM_PART]}  # fmt: skip
            return Measurement(DM_CSC, Kind.EVENT, "sensorQuality"), 0, fields
        if parts[1] == "status" and len(parts) == 3:
            fields = {"stage": parts[2][:_DM_PART]}
            return Measurement(DM_CSC, Kind.EVENT, "processingStatus"), 0, fields
    return Refused("not a topic of the ICD")


def _seq(value: Any, flags: list[str]) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_SEQ:
        return value
    flags.append("seq missing" if value is None else "seq not a non-negative integer")
    return 0


def _sent_tai(value: Any, received_tai: float, flags: list[str]) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if math.isfinite(number) and 0.0 <= number <= LATEST_TAI:
            return number
    flags.append("sent_tai missing" if value is None else "sent_tai not a time")
    return received_tai
