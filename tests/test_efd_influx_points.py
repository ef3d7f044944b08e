"""The pure half of the InfluxDB store: timestamps, line protocol, quoting, type
conflicts (no server: the round trips through one are in test_efd_stores.py)."""

from __future__ import annotations

import calendar
import json

from hypothesis import given
from hypothesis import strategies as st

from cscs.core.topics import Kind
from cscs.efd.influx_points import (
    DROPPED,
    coerce,
    influx_time_ns,
    parse_type_conflict,
    quote_ident,
    to_line,
    to_point,
)
from cscs.efd.records import EfdRecord, Measurement

MOUNT = Measurement("Telescope", Kind.TELEMETRY, "mount")


def test_a_points_time_is_the_utc_of_sent_tai_plus_seq_nanoseconds() -> None:
    utc = calendar.timegm((2026, 12, 7, 3, 0, 0))  # TAI - UTC = 37 s
    assert influx_time_ns(utc + 37.0 + 0.25, 12) == (utc * 10**6 + 250_000) * 1000 + 12
    assert influx_time_ns(utc + 37.0, 1012) == influx_time_ns(utc + 37.0, 12)
    # Before the leap second of 2017-01-01, TAI - UTC was 36 s.
    utc_2016 = calendar.timegm((2016, 12, 31, 12, 0, 0))
    assert influx_time_ns(utc_2016 + 36.0, 0) == utc_2016 * 10**9


def test_one_message_makes_one_point_and_two_messages_two() -> None:
    one = EfdRecord(MOUNT, 1, 7, 1.8e9 + 0.1, 1.8e9 + 0.2, {"x": 1.0})
    again = EfdRecord(MOUNT, 1, 7, 1.8e9 + 0.1, 1.8e9 + 0.3, {"x": 1.0})
    other = EfdRecord(MOUNT, 1, 8, 1.8e9 + 0.1, 1.8e9 + 0.2, {"x": 1.0})
    assert to_point(one)["time"] == to_point(again)["time"] != to_point(other)["time"]
    assert to_point(one)["tags"] == {"salIndex": "1"}
    assert to_point(one)["fields"] == {
        "x": 1.0, "private_sndStamp": 1.8e9 + 0.1, "private_rcvStamp": 1.8e9 + 0.2,
        "private_seqNum": 7, "salIndex": 1,
    }  # fmt: skip


def test_numbers_influxdb_cannot_hold_are_kept_as_text() -> None:
    record = EfdRecord(MOUNT, 0, 1, 1.8e9, 1.8e9, {"nan": float("nan"), "big": 2**64})
    assert to_point(record)["fields"]["nan"] == "NaN"
    assert to_point(record)["fields"]["big"] == str(2**64)


def test_names_influxdb_cannot_keep_are_listed_not_written() -> None:
    record = EfdRecord(MOUNT, 0, 1, 1.8e9, 1.8e9, {"a\\b": 1, "time": 2, "ok": None, "y": 3})
    fields = to_point(record)["fields"]
    assert json.loads(fields[DROPPED]) == ["a\\b", "time"]
    assert "ok" not in fields  # null: absent, as InfluxDB has it
    assert fields["y"] == 3


@given(st.text(max_size=30))
def test_an_identifier_cannot_be_closed_from_inside(name: str) -> None:
    quoted = quote_ident(name)
    inner = quoted[1:-1]
    # Every quote inside is escaped: drop the escaped pairs and no quote is left.
    unescaped = inner.replace("\\\\", "").replace('\\"', "")
    assert quoted[0] == quoted[-1] == '"'
    assert '"' not in unescaped


@given(st.text(max_size=30))
def test_text_values_stay_inside_their_quotes_in_line_protocol(text: str) -> None:
    point = to_point(EfdRecord(MOUNT, 0, 1, 1.8e9, 1.8e9, {"s": text}))
    line = to_line(point)
    rest = line.split(" s=", 1)[1]
    assert rest[0] == '"'
    # Read the value as InfluxDB does: up to the first quote not escaped.
    i, value = 1, ""
    while rest[i] != '"':
        if rest[i] == "\\" and rest[i + 1] in '"\\':
            i += 1
        value += rest[i]
        i += 1
    assert value == text
    assert rest[i + 1 :].startswith(",private_sndStamp=")


def test_a_type_conflict_is_read_and_settled_without_losing_values() -> None:
    message = (
        '400: {"error":"partial write: field type conflict: input field \\"mode\\" on '
        'measurement \\"lsst.sal.A.x\\" is type integer, already exists as type float dropped=1"}'
    )
    assert parse_type_conflict(message) == ("lsst.sal.A.x", "mode", "float")
    assert parse_type_conflict("400: unable to parse") is None
    points = [
        {"measurement": "lsst.sal.A.x", "fields": {"mode": 3}},
        {"measurement": "lsst.sal.A.x", "fields": {"mode": "on"}},
        {"measurement": "lsst.sal.A.y", "fields": {"mode": 4}},
    ]
    coerce(points, "lsst.sal.A.x", "mode", "float")
    assert points[0]["fields"] == {"mode": 3.0}
    assert points[1]["fields"] == {DROPPED: '["mode"]'}
    assert points[2]["fields"] == {"mode": 4}
