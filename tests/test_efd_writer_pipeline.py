"""The EFD writer's pipeline without MQTT: each kind of message recorded under the
observatory's names, a store that is down or slow costing a spool and never the bus
side, the spool replayed in order (and surviving a restart), and hostile payloads never
taking it down."""

from __future__ import annotations

import asyncio
import errno
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cscs.core.topics import Kind
from cscs.core.transport import Message
from cscs.efd.memory import MemoryStore
from cscs.efd.records import EfdRecord, Measurement
from cscs.efd.store import EfdStoreError
from cscs.efd_writer.parse import FLAG_FIELD, LATEST_TAI, Refused, to_record
from cscs.efd_writer.recorder import Limits, Recorder, SpoolUnwritableError
from cscs.efd_writer.spool import Spool

LOG = structlog.get_logger("test")
NOW = 1.9e9


def parse(topic: str, payload: dict[str, Any] | bytes) -> EfdRecord | Refused:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return to_record(topic, data, prefix="obs", dm_prefix="dm", received_tai=NOW,
                     max_bytes=65_536)  # fmt: skip


def record(topic: str, payload: dict[str, Any]) -> EfdRecord:
    parsed = parse(topic, payload)
    assert isinstance(parsed, EfdRecord), parsed
    return parsed


# ---- names and fields --------------------------------------------------------------------


def test_each_kind_is_named_as_the_observatory_names_it() -> None:
    archived = {"seq": 3, "sent_tai": 1.8e9, "imageName": "AT_O_1", "sizes": [1, 2]}
    event = record("obs/Archiver/1/evt/imageArchived", archived)
    assert str(event.measurement) == "lsst.sal.Archiver.logevent_imageArchived"
    assert (event.index, event.seq, event.sent_tai, event.received_tai) == (1, 3, 1.8e9, NOW)
    assert event.fields == {"imageName": "AT_O_1", "sizes0": 1, "sizes1": 2}

    sample = record("obs/Weather/0/tel/weather", {"seq": 9, "sent_tai": 1.8e9, "seeing": 0.7})
    assert str(sample.measurement) == "lsst.sal.Weather.weather"
    assert sample.fields == {"seeing": 0.7}

    command = record("obs/Camera/2/cmd/takeImages", {
        "seq": 17, "origin": "ocs-7f3a", "identity": "night@summit", "sent_tai": 1.8e9,
        "params": {"numImages": 2, "expTime": 1.5}})  # fmt: skip
    assert str(command.measurement) == "lsst.sal.Camera.command_takeImages"
    assert (command.index, command.seq) == (2, 17)
    assert command.fields == {"numImages": 2, "expTime": 1.5, "private_origin": "ocs-7f3a",
                              "private_identity": "night@summit"}  # fmt: skip

    answer = {"seq": 17, "origin": "ocs-7f3a", "command": "takeImages", "ack": "COMPLETE",
              "code": 303, "error": 0, "result": "Done", "sent_tai": 1.8e9}  # fmt: skip
    ack = record("obs/Camera/2/ack", answer)
    assert str(ack.measurement) == "lsst.sal.Camera.ackcmd"
    assert ack.fields["ack"] == "COMPLETE"
    assert ack.fields["command"] == "takeImages"
    assert "seq" not in ack.fields
    assert "sent_tai" not in ack.fields


def test_dm_internal_topics_are_recorded_as_csc_dm() -> None:
    summary = record("dm/qc/LATISS/AT_O_20261121_000008", {"seq": 1, "sent_tai": 1.8e9,
                                                            "psfFwhm": 0.7})  # fmt: skip
    assert str(summary.measurement) == "lsst.sal.DM.logevent_imageQuality"
    assert summary.fields == {"psfFwhm": 0.7, "instrument": "LATISS",
                              "imageName": "AT_O_20261121_000008"}  # fmt: skip
    sensor = record("dm/qc/LATISS/AT_O_20261121_000008/R00S00", {"seq": 1, "sent_tai": 1.8e9})
    assert str(sensor.measurement) == "lsst.sal.DM.logevent_sensorQuality"
    assert sensor.fields["sensor"] == "R00S00"
    stage = record("dm/status/image-qc", {"seq": 4, "sent_tai": 1.8e9, "imageName": "X",
                                          "stage": "image-qc", "status": "measured"})  # fmt: skip
    assert str(stage.measurement) == "lsst.sal.DM.logevent_processingStatus"
    assert stage.fields["status"] == "measured"


def test_an_unusable_envelope_is_recorded_and_flagged() -> None:
    flagged = record("obs/Test/1/evt/scalars", {"seq": "x", "value": 1})
    assert (flagged.seq, flagged.sent_tai) == (0, NOW)
    assert flagged.fields[FLAG_FIELD] == "seq not a non-negative integer; sent_tai missing"
    beyond = record("obs/Test/1/evt/scalars", {"seq": 1, "sent_tai": 1e300})
    assert beyond.sent_tai == NOW  # no store could keep it, nor what comes behind it
    assert "sent_tai not a time" in str(beyond.fields[FLAG_FIELD])
    huge = record("obs/Test/1/evt/scalars", {"seq": 1, "sent_tai": 10**400})
    assert huge.sent_tai == NOW
    assert "sent_tai not a time" in str(huge.fields[FLAG_FIELD])


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("obs/Test/1/evt/scalars", b"\xff", "not UTF-8"),
        ("obs/Test/1/evt/scalars", b"[1]", "must be a JSON object"),
        ("obs/Test/1/evt/scalars", b"{" * 100_000, "more than 65536"),
        ("elsewhere/thing", b"{}", "not a topic of the ICD"),
        ("obs/Test/x/evt/scalars", b"{}", "not a topic of the ICD"),
        ("obs/Test/1/evt/a-b", b"{}", "not a name"),
    ],
)
def test_what_is_not_recorded_says_why(topic: str, payload: bytes, reason: str) -> None:
    refused = parse(topic, payload)
    assert isinstance(refused, Refused)
    assert reason in refused.reason


# ---- the pipeline ------------------------------------------------------------------------


class Acks:
    """The acknowledgements the pipeline sends to the broker, by message number."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def message(self, n: int, topic: str = "obs/Test/1/evt/scalars") -> Message:
        payload = json.dumps({"seq": n, "sent_tai": 1.8e9 + n, "value": n}).encode()
        return Message(topic, payload, ack=lambda: self.sent.append(n))


def recorder(store: MemoryStore, spool_dir: Path, **limits: Any) -> Recorder:
    values = {"batch_size": 10, "batch_interval": 0.01, "queue_capacity": 50,
              "retry_max": 0.05} | limits  # fmt: skip
    return Recorder(lambda: store, Spool(spool_dir, 4096), Limits(**values), LOG)


def seqs(store: MemoryStore) -> list[int]:
    """What the store holds (read past a simulated outage)."""
    fail, store.fail = store.fail, None
    try:
        return [r.seq for r in store.records([Measurement("Test", Kind.EVENT, "scalars")], 0, 3e9)]
    finally:
        store.fail = fail


async def drain(rec: Recorder, store: MemoryStore, expected: int) -> None:
    """Run the store side until the store has ``expected`` records and the spool is
    empty (each step waits on the pipeline's own events, not on time)."""
    async with asyncio.timeout(20):
        while len(seqs(store)) < expected or not rec.spool.empty or rec.queued:
            await rec.write_batch(await rec.next_batch())


async def test_records_reach_the_store_and_are_acknowledged_after(tmp_path: Path) -> None:
    store, acks = MemoryStore(), Acks()
    rec = recorder(store, tmp_path)
    for n in range(1, 26):
        await rec.heard(acks.message(n))
    assert acks.sent == []  # nothing acknowledged before it is stored
    await drain(rec, store, 25)
    assert seqs(store) == list(range(1, 26))
    assert sorted(acks.sent) == list(range(1, 26))
    assert rec.counts["written"] == 25
    assert rec.counts["spooled"] == 0


async def test_a_store_down_costs_a_spool_replayed_in_order_once_it_is_back(
    tmp_path: Path,
) -> None:
    store, acks = MemoryStore(), Acks()
    store.fail = EfdStoreError("memory://: down (test)")
    rec = recorder(store, tmp_path)
    for n in range(1, 31):
        await rec.heard(acks.message(n))
    for _ in range(3):
        await rec.write_batch(await rec.next_batch())
    assert seqs(store) == []
    assert not rec.store_up
    assert "down (test)" in rec.last_error
    assert sorted(acks.sent) == list(range(1, 31))  # safe in the spool: acknowledged
    assert rec.counts["spooled"] == 30
    assert rec.spool.bytes > 0
    # Back: more comes, and everything arrives once, the spool first.
    store.fail = None
    for n in range(31, 41):
        await rec.heard(acks.message(n))
    written: list[int] = []
    original = store.write

    def write(records: Any) -> None:
        written.extend(r.seq for r in records)
        original(records)

    store.write = write  # type: ignore[method-assign]
    await drain(rec, store, 40)
    assert seqs(store) == list(range(1, 41))
    assert written == list(range(1, 41))  # in the order heard: nothing written twice
    assert rec.store_up
    assert rec.spool.empty
    assert rec.spool.bytes == 0
    assert Spool(tmp_path).empty  # the files are gone too


async def test_the_spool_survives_a_restart_of_the_writer(tmp_path: Path) -> None:
    store, acks = MemoryStore(), Acks()
    store.fail = EfdStoreError("down")
    first = recorder(store, tmp_path)
    for n in range(1, 21):
        await first.heard(acks.message(n))
    await first.close()  # what was queued goes to the spool
    assert sorted(acks.sent) == list(range(1, 21))
    assert seqs(store) == []
    store.fail = None
    second = recorder(store, tmp_path)  # a new process on the same state directory
    assert not second.spool.empty
    await drain(second, store, 20)
    assert seqs(store) == list(range(1, 21))


async def test_a_slow_store_never_holds_the_bus_side_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    """The store's write hangs: the bus side goes on, the queue never grows past its
    bound (the rest is spooled), and once the store answers everything is there once."""
    store, acks = MemoryStore(), Acks()
    release = threading.Event()
    original = store.write

    def slow(records: Any) -> None:
        release.wait(30)
        original(records)

    store.write = slow  # type: ignore[method-assign]
    rec = recorder(store, tmp_path, queue_capacity=20)
    writer = asyncio.create_task(rec.write_forever())
    async with asyncio.timeout(10):
        for n in range(1, 201):
            await rec.heard(acks.message(n))
            assert rec.queued < 20
    assert rec.counts["spooled"] >= 150  # the bus side spilled instead of waiting
    release.set()
    try:
        async with asyncio.timeout(20):
            while len(seqs(store)) < 200 or not rec.spool.empty:
                rec.progressed.clear()
                await rec.progressed.wait()
    finally:
        writer.cancel()
    assert seqs(store) == sorted(set(seqs(store)))
    assert len(seqs(store)) == 200
    assert sorted(acks.sent) == list(range(1, 201))


async def test_a_spool_that_cannot_be_written_stops_it_with_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    store, acks = MemoryStore(), Acks()
    store.fail = EfdStoreError("down")
    rec = recorder(store, tmp_path)

    def full(records: Any) -> int:  # the disk will not have it
        raise OSError(errno.ENOSPC, "No space left on device")

    rec.spool.append = full  # type: ignore[method-assign]
    for n in range(1, 6):
        await rec.heard(acks.message(n))
    with pytest.raises(SpoolUnwritableError, match="No space left on device"):
        await rec.write_batch(await rec.next_batch())
    assert acks.sent == []  # the broker keeps them


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    rec = record("obs/Test/1/evt/scalars", {"seq": 1, "sent_tai": 1.8e9})
    spool.append([rec])
    segment_path = next(tmp_path.iterdir())
    with segment_path.open("ab") as out:
        out.write(b'["Test","evt","scal')  # a crash mid-append
    segment = Spool(tmp_path).oldest()
    assert segment is not None
    assert segment.records == [rec]
    assert segment.torn == 1


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    topic=st.one_of(
        st.text(max_size=60),
        st.sampled_from(
            [
                "obs/Test/1/evt/scalars",
                "obs/Test/1/cmd/ping",
                "obs/Test/1/ack",
                "obs/Test/1/tel/t",
                "dm/qc/LATISS/X",
                "dm/qc/LATISS/X/S",
                "dm/status/image-qc",
            ]
        ),
    ),
    payload=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    ),
)
def test_hostile_payloads_never_crash_it(topic: str, payload: bytes) -> None:
    parsed = to_record(topic, payload, prefix="obs", dm_prefix="dm", received_tai=NOW,
                       max_bytes=65_536)  # fmt: skip
    if isinstance(parsed, EfdRecord):
        # What is recorded can be spooled and read back as it was.
        from cscs.efd_writer.spool import decode_record, encode_record

        assert decode_record(encode_record(parsed)) == parsed
        assert 0.0 <= parsed.sent_tai <= LATEST_TAI  # a time every store can keep
