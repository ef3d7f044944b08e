"""The EFD store contract, on both stores: the embedded SQLite file and InfluxDB 1.x
(a server of the tests' own, the system tier). Each test runs on an empty store."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import time
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from influxdb import InfluxDBClient

from cscs.core.topics import Kind
from cscs.efd.influx_points import DROPPED, keepable_name
from cscs.efd.influx_store import InfluxStore
from cscs.efd.open import open_store
from cscs.efd.records import EfdRecord, Measurement, parse_measurement
from cscs.efd.sqlite_store import SqliteStore
from cscs.efd.store import EfdStore, EfdStoreError

T0 = 1_800_000_000.0  # TAI seconds, 2027
MOUNT = Measurement("Telescope", Kind.TELEMETRY, "mount")
HEARTBEAT = Measurement("Telescope", Kind.EVENT, "heartbeat")


def record(
    measurement: Measurement = MOUNT,
    seq: int = 0,
    sent: float = T0,
    index: int = 1,
    **fields: bool | int | float | str | None,
) -> EfdRecord:
    return EfdRecord(measurement, index, seq, sent, sent + 0.003, fields or {"value": seq * 1.5})


def stored(store: EfdStore, measurement: Measurement = MOUNT, **kwargs: Any) -> list[EfdRecord]:
    return store.records([measurement], T0 - 1e6, T0 + 1e6, **kwargs)


def without_nulls(fields: dict[str, Any]) -> dict[str, Any]:
    """InfluxDB has no null: a field published as null reads as absent."""
    return {k: v for k, v in fields.items() if v is not None}


def test_an_empty_store_has_nothing(efd_store: EfdStore) -> None:
    assert efd_store.measurements() == []
    assert stored(efd_store) == []
    assert "value" not in efd_store.fields(MOUNT)


def test_a_record_reads_back_with_its_fields_typed(efd_store: EfdStore) -> None:
    fields: dict[str, bool | int | float | str | None] = {
        "azimuth": 1.0,  # an integral float stays a float
        "count": 3,
        "big": 2**62 + 1,
        "tracking": True,
        "name": 'he said "hi" \\ o/',
        "empty": "",
        "nothing": None,
    }
    written = EfdRecord(MOUNT, 2, 41, T0 + 0.123456, T0 + 0.2, fields)
    efd_store.write([written])
    (back,) = stored(efd_store)
    assert (back.measurement, back.index, back.seq) == (MOUNT, 2, 41)
    assert (back.sent_tai, back.received_tai) == (written.sent_tai, written.received_tai)
    assert without_nulls(back.fields) == without_nulls(fields)
    for name, value in without_nulls(fields).items():
        assert type(back.fields[name]) is type(value), name
    assert efd_store.measurements() == [MOUNT]
    assert set(efd_store.fields(MOUNT)) >= {
        "azimuth", "count", "tracking", "private_sndStamp", "private_rcvStamp", "private_seqNum"
    }  # fmt: skip


def test_writes_are_idempotent_on_the_record_key(efd_store: EfdStore) -> None:
    batch = [record(seq=i, sent=T0 + i) for i in range(5)]
    efd_store.write(batch)
    efd_store.write(batch[2:])  # a batch written again after a timeout
    second_writer = open_store(efd_store.url)  # another writer that heard the same
    second_writer.write([replace(r, received_tai=r.received_tai + 0.5) for r in batch])
    second_writer.close()
    assert [r.seq for r in stored(efd_store)] == [0, 1, 2, 3, 4]
    # Same sent_tai, another seq: another message (two in one microsecond both stay).
    efd_store.write([record(seq=5, sent=T0), record(seq=6, sent=T0)])
    assert [r.seq for r in stored(efd_store)] == [0, 5, 6, 1, 2, 3, 4]
    # The same message on another index is another record.
    efd_store.write([record(seq=0, sent=T0, index=2)])
    assert len(stored(efd_store)) == 8


def test_ranges_are_inclusive_and_in_time_order(efd_store: EfdStore) -> None:
    efd_store.write([record(seq=i, sent=T0 + i * 0.5) for i in reversed(range(20))])
    efd_store.write([record(HEARTBEAT, seq=i, sent=T0 + 0.25 + i * 0.5) for i in range(3)])
    got = efd_store.records([MOUNT], T0 + 1.0, T0 + 3.0)
    assert [r.sent_tai for r in got] == [T0 + 1.0, T0 + 1.5, T0 + 2.0, T0 + 2.5, T0 + 3.0]
    both = efd_store.records([MOUNT, HEARTBEAT], T0, T0 + 1.0)
    assert [(str(r.measurement), r.seq) for r in both] == [
        (str(MOUNT), 0), (str(HEARTBEAT), 0), (str(MOUNT), 1), (str(HEARTBEAT), 1), (str(MOUNT), 2)
    ]  # fmt: skip
    assert efd_store.measurements() == sorted([MOUNT, HEARTBEAT])


def test_the_index_filter_and_newest_first_with_a_limit(efd_store: EfdStore) -> None:
    efd_store.write([record(seq=i, sent=T0 + i, index=1 + i % 2) for i in range(10)])
    assert [r.seq for r in stored(efd_store, index=2)] == [1, 3, 5, 7, 9]
    newest = stored(efd_store, index=1, newest_first=True, limit=3)
    assert [r.seq for r in newest] == [8, 6, 4]
    assert [r.seq for r in stored(efd_store, limit=2)] == [0, 1]
    assert stored(efd_store, limit=0) == []
    assert stored(efd_store, index=3) == []


def test_a_field_of_another_type_later_does_not_lose_the_batch(efd_store: EfdStore) -> None:
    """InfluxDB fixes a field's type with its first value; a publisher sending another
    type later must not cost the records around it."""
    efd_store.write([record(seq=0, value=1.5, mode="a")])
    efd_store.write([record(seq=1, sent=T0 + 1, value=2, mode=3), record(seq=2, sent=T0 + 2)])
    got = stored(efd_store)
    assert [r.seq for r in got] == [0, 1, 2]
    assert got[1].fields["value"] == 2  # kept (as 2.0 on InfluxDB)
    assert got[1].fields.get("mode") in (3, "3")


_examples = itertools.count()
NAMES = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() != "")


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(NAMES, min_size=1, max_size=4, unique=True),
    text=st.text(max_size=40),
    topic=st.text(max_size=12),
)
def test_odd_names_round_trip_and_cannot_inject(
    efd_store: EfdStore, names: list[str], text: str, topic: str
) -> None:
    """Field names and text as anyone on the bus could send them: each comes back as it
    was, or (a name InfluxDB cannot keep: a backslash, a line break, ``time``) is listed
    as dropped; nothing ends a quoted name and adds to a query."""
    influx = isinstance(efd_store, InfluxStore)
    measurement = Measurement("Odd", Kind.EVENT, f"e{next(_examples)}{topic}")
    fields: dict[str, bool | int | float | str | None] = {n: text for n in names}
    if influx and not keepable_name(str(measurement)):
        with pytest.raises(EfdStoreError, match="measurement names InfluxDB cannot keep"):
            efd_store.write([EfdRecord(measurement, 1, 1, T0, T0, fields)])
        measurement = Measurement("Odd", Kind.EVENT, f"e{next(_examples)}")
    efd_store.write([EfdRecord(measurement, 1, 1, T0, T0, fields)])
    (back,) = stored(efd_store, measurement)
    for name in names:
        if influx and not keepable_name(name):
            assert name in json.loads(str(back.fields[DROPPED]))
        else:
            assert back.fields[name] == text
    if parse_measurement(str(measurement)) == measurement:  # listed by a name it parses
        assert measurement in efd_store.measurements()
    # A measurement name made to close the quotes: it names nothing, and harms nothing.
    for evil in ('x" ; DROP DATABASE "e', 'mount" OR 1=1 --', 'a\\" b'):
        assert efd_store.records([Measurement("T", Kind.TELEMETRY, evil)], 0, math.inf) == []
        assert "value" not in efd_store.fields(Measurement("T", Kind.TELEMETRY, evil))
    assert len(stored(efd_store, measurement)) == 1


def test_a_sqlite_file_is_made_with_its_directory_and_read_by_another_connection(
    tmp_path: Any,
) -> None:
    path = tmp_path / "state" / "efd" / "efd.sqlite3"
    writer = open_store(f"sqlite:///{path}")
    reader = open_store(f"sqlite:///{path}")  # as the header service opens it
    writer.write([record(seq=1)])
    assert [r.seq for r in stored(reader)] == [1]
    assert reader.fields(MOUNT) == [
        "private_rcvStamp", "private_seqNum", "private_sndStamp", "value"
    ]  # fmt: skip
    writer.close()
    reader.close()


def test_a_committed_sqlite_batch_is_fsynced_before_write_returns(tmp_path: Any) -> None:
    """The writer acknowledges QoS 1 messages and removes spool segments once ``write``
    returns: in WAL mode only ``synchronous=FULL`` (2) fsyncs at each COMMIT, so a
    power cut cannot lose a batch already acknowledged."""
    store = SqliteStore(tmp_path / "efd.sqlite3")
    db = store._db  # noqa: SLF001 (the pragma is the connection's, not the file's)
    try:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_a_full_disk_is_named_and_the_batch_not_half_written(tmp_path: Any) -> None:
    path = tmp_path / "efd.sqlite3"
    store = SqliteStore(path)
    store.write([record(seq=0)])
    full = sqlite3.connect(path)
    pages = full.execute("PRAGMA page_count").fetchone()[0]
    full.close()
    store._db.execute(f"PRAGMA max_page_count = {pages + 1}")  # noqa: SLF001 (a full disk)
    batch = [record(seq=i, sent=T0 + i, text="x" * 500) for i in range(1, 200)]
    with pytest.raises(EfdStoreError, match=r"efd\.sqlite3: write: disk full"):
        store.write(batch)
    assert [r.seq for r in stored(store)] == [0]  # all of a batch or nothing
    store.close()


def test_an_efd_file_where_no_directory_can_be_made_is_named(tmp_path: Any) -> None:
    (tmp_path / "state").write_text("a file where the directory should be")
    with pytest.raises(EfdStoreError, match=r"state/efd/efd\.sqlite3: cannot make its directory"):
        open_store(f"sqlite:///{tmp_path / 'state' / 'efd' / 'efd.sqlite3'}")


def test_a_corrupt_sqlite_file_is_named_with_the_cause(tmp_path: Any) -> None:
    path = tmp_path / "efd.sqlite3"
    path.write_bytes(b"this is not a database, just bytes " * 200)
    with pytest.raises(EfdStoreError, match=r"efd\.sqlite3.*corrupt"):
        open_store(f"sqlite:///{path}")


def test_a_locked_sqlite_file_is_an_error_not_a_hang(tmp_path: Any) -> None:
    path = tmp_path / "efd.sqlite3"
    open_store(f"sqlite:///{path}").close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holding the file
    store = SqliteStore(path, busy_timeout=0.05)
    try:
        with pytest.raises(EfdStoreError, match=r"efd\.sqlite3: write: locked"):
            store.write([record()])
    finally:
        other.execute("ROLLBACK")
        other.close()
        store.close()


@pytest.mark.broker
def test_an_influxdb_that_is_down_raises_fast() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = InfluxStore("127.0.0.1", port, "efd", timeout=1.0)
    began = time.monotonic()
    with pytest.raises(EfdStoreError, match=rf"influxdb://127.0.0.1:{port}/efd: .*: unreachable"):
        store.write([record()])
    with pytest.raises(EfdStoreError, match="unreachable"):
        store.measurements()
    assert time.monotonic() - began < 3


@pytest.mark.broker
def test_an_influxdb_that_does_not_answer_raises_after_its_timeout() -> None:
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        store = InfluxStore("127.0.0.1", silent.getsockname()[1], "efd", timeout=0.5)
        began = time.monotonic()
        with pytest.raises(EfdStoreError, match="no answer in time"):
            store.write([record()])
        assert time.monotonic() - began < 3


@pytest.mark.broker
def test_influxdb_keeps_what_it_has_across_a_restart(influx_server: Any, influx_url: str) -> None:
    store = open_store(influx_url)
    store.write([record(seq=i, sent=T0 + i) for i in range(3)])
    influx_server.restart()
    assert [r.seq for r in stored(store)] == [0, 1, 2]
    store.close()


_WRITER = """
import sys
from pathlib import Path
from cscs.core.topics import Kind
from cscs.efd.records import EfdRecord, Measurement, parse_measurement
from cscs.efd.sqlite_store import SqliteStore
store = SqliteStore(Path(sys.argv[1]))
mount = Measurement("Telescope", Kind.TELEMETRY, "mount")
print("ready", flush=True)
for batch in range(40):
    store.write([EfdRecord(mount, 1, batch * 100 + i, 1.8e9 + batch * 100 + i, 1.8e9, {"x": i})
                 for i in range(100)])
store.close()
"""


@pytest.mark.broker
def test_a_sqlite_file_is_read_while_another_process_writes_it(tmp_path: Any) -> None:
    """The header service and ``cscs efd`` read while the EFD writer writes: each read
    sees whole batches (never half of one), and neither side gets an error."""
    import subprocess
    import sys

    path = tmp_path / "efd" / "efd.sqlite3"
    reader = SqliteStore(path)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == "ready\n"
    counts = []
    while writer.poll() is None:
        counts.append(len(reader.records([MOUNT], 0, math.inf)))
    assert writer.wait() == 0
    writer.stdout.close()
    counts.append(len(reader.records([MOUNT], 0, math.inf)))
    assert all(c % 100 == 0 for c in counts), counts
    assert counts == sorted(counts)
    assert counts[-1] == 4000
    reader.close()


@pytest.mark.broker
def test_influxdb_on_fresh_data_gets_its_database_again(influx_url: str) -> None:
    """A server whose database went (dropped, restarted on empty data): the next write
    after the failed one makes it again, so a writer retrying its spool gets through."""
    store = open_store(influx_url)
    assert isinstance(store, InfluxStore)
    store.write([record(seq=1)])
    raw = InfluxDBClient(*influx_url.removeprefix("influxdb://").split("/")[0].split(":"))
    raw.drop_database(store.database)
    with pytest.raises(EfdStoreError, match="database not found"):
        store.write([record(seq=2)])
    store.write([record(seq=2)])
    assert [r.seq for r in stored(store)] == [2]
    raw.close()
    store.close()


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    number=st.floats(allow_nan=False, allow_infinity=False),
    integer=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    flag=st.booleans(),
)
def test_any_number_round_trips(
    efd_store: EfdStore, number: float, integer: int, flag: bool
) -> None:
    measurement = Measurement("Numbers", Kind.TELEMETRY, f"n{next(_examples)}")
    efd_store.write([EfdRecord(measurement, 0, 1, T0, T0, {"f": number, "i": integer, "b": flag})])
    (back,) = stored(efd_store, measurement)
    assert back.fields == {"f": number, "i": integer, "b": flag}
    assert [type(back.fields[k]) for k in "fib"] == [float, int, bool]
