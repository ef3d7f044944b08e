"""A record the store refuses for good (InfluxDB's 413, a 400 partial write) is set
aside in a bounded dead-letter file and counted: the records around it are written, the
spool drains, and nothing waits behind it for ever (review 30, finding 2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from cscs.core.topics import Kind
from cscs.core.transport import Message
from cscs.efd.memory import MemoryStore
from cscs.efd.records import EfdRecord, Measurement
from cscs.efd.store import EfdRefusedError, EfdStoreError
from cscs.efd_writer.dead_letter import DeadLetters
from cscs.efd_writer.recorder import Limits, Recorder
from cscs.efd_writer.spool import Spool, decode_record

LOG = structlog.get_logger("test")
SCALARS = Measurement("Test", Kind.EVENT, "scalars")


class RefusingStore(MemoryStore):
    """Refuses, as a whole, every batch holding a record of seq ``bad`` (as InfluxDB
    refuses a body with one line too large), and counts the writes tried."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.bad = bad
        self.tries = 0

    def write(self, records: Sequence[EfdRecord]) -> None:
        self.tries += 1
        if any(r.seq == self.bad for r in records):
            raise EfdRefusedError("memory://: write: refused: 413 too large (test)", records)
        super().write(records)


def message(n: int, acks: list[int]) -> Message:
    payload = json.dumps({"seq": n, "sent_tai": 1.8e9 + n, "value": n}).encode()
    return Message("obs/Test/1/evt/scalars", payload, ack=lambda: acks.append(n))


def recorder(store: MemoryStore, spool_dir: Path) -> Recorder:
    limits = Limits(batch_size=16, batch_interval=0.01, queue_capacity=64, retry_max=0.05)
    return Recorder(lambda: store, Spool(spool_dir, 4096), limits, LOG)


def stored(store: MemoryStore) -> list[int]:
    fail, store.fail = store.fail, None
    try:
        return [r.seq for r in store.records([SCALARS], 0, 3e9)]
    finally:
        store.fail = fail


async def test_a_refused_record_is_set_aside_and_the_spool_drains_past_it(
    tmp_path: Path,
) -> None:
    store, acks = RefusingStore(bad=7), list[int]()
    store.fail = EfdStoreError("memory://: down (test)")
    rec = recorder(store, tmp_path)
    for n in range(1, 41):  # heard while the store is down: spooled
        await rec.heard(message(n, acks))
    for _ in range(3):
        await rec.write_batch(await rec.next_batch())
    assert not rec.spool.empty
    store.fail = None  # back, but it will never take seq 7
    for n in range(41, 51):
        await rec.heard(message(n, acks))
    async with asyncio.timeout(20):
        while len(stored(store)) < 49 or not rec.spool.empty or rec.queued:
            await rec.write_batch(await rec.next_batch())
    assert stored(store) == [n for n in range(1, 51) if n != 7]
    assert sorted(acks) == list(range(1, 51))
    assert rec.store_up  # a refusal is not an outage
    assert rec.counts["store_refused"] == 1
    lines = (tmp_path / "refused" / "refused.jsonl").read_bytes().splitlines()
    assert [decode_record(line).seq for line in lines] == [7]
    assert store.tries < 40  # bisected, not one write per record


async def test_a_refused_record_written_directly_is_set_aside_too(tmp_path: Path) -> None:
    store, acks = RefusingStore(bad=3), list[int]()
    rec = recorder(store, tmp_path)
    for n in range(1, 11):
        await rec.heard(message(n, acks))
    await rec.write_batch(await rec.next_batch())
    assert stored(store) == [1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert sorted(acks) == list(range(1, 11))
    assert rec.spool.empty
    assert rec.counts["store_refused"] == 1


def test_the_dead_letter_file_is_bounded(tmp_path: Path) -> None:
    letters = DeadLetters(tmp_path / "refused", max_bytes=300)
    record = EfdRecord(SCALARS, 1, 1, 1.8e9, 1.8e9, {"text": "x" * 100})
    kept = [letters.keep([record]) for _ in range(10)]
    assert kept[0] == 1
    assert kept[-1] == 0  # past the bound: counted by the writer, not kept
    assert letters.path.stat().st_size <= 300


def test_store_refused_is_in_the_status() -> None:
    from cscs.efd_writer.interface import EfdWriterStatus

    fields: Any = EfdWriterStatus.model_fields
    assert "storeRefused" in fields


# ---- memory bounded in bytes (review 30, finding 4) ---------------------------------------


async def test_a_flood_of_large_messages_keeps_the_queue_and_segments_under_their_bytes(
    tmp_path: Path,
) -> None:
    """The store hangs while ~60 kB messages flood in: the queue spills at its byte bound
    long before its record bound, and no spool segment grows past the segment size."""
    import threading

    store = MemoryStore()
    release = threading.Event()
    original = store.write

    def slow(records: Any) -> None:
        release.wait(30)
        original(records)

    store.write = slow  # type: ignore[method-assign]
    limits = Limits(batch_size=1000, batch_interval=0.01, queue_capacity=20_000,
                    queue_bytes=300_000, max_message_bytes=1_048_576)  # fmt: skip
    segment_bytes = 200_000
    rec = Recorder(lambda: store, Spool(tmp_path, segment_bytes), limits, LOG)
    writer = asyncio.create_task(rec.write_forever())
    big = "z" * 60_000
    try:
        async with asyncio.timeout(20):
            for n in range(1, 101):
                body = {"seq": n, "sent_tai": 1.8e9 + n, "text": big[:15_000], "more": big}
                payload = json.dumps(body).encode()
                await rec.heard(Message("obs/Test/1/evt/scalars", payload, ack=lambda: None))
                assert rec.queued_bytes <= limits.queue_bytes
    finally:
        release.set()
        writer.cancel()
    assert rec.counts["spooled"] >= 80
    assert segment_sizes_within(tmp_path, segment_bytes) > 1


def segment_sizes_within(directory: Path, segment_bytes: int) -> int:
    """How many segments there are, each checked to hold at most ``segment_bytes`` (or
    a single record larger than that)."""
    segments = sorted(directory.glob("*.spool"))
    for path in segments:
        data = path.read_bytes()
        assert len(data) <= segment_bytes or data.count(b"\n") == 1, (path, len(data))
    return len(segments)


def test_a_segment_larger_than_the_segment_size_is_replayed_in_bounded_chunks(
    tmp_path: Path,
) -> None:
    """A segment written before segments were capped (or with a larger setting) is read
    back in chunks of about the segment size, every record once and in order."""
    records = [EfdRecord(SCALARS, 1, n, 1.8e9 + n, 1.8e9 + n, {"text": "w" * 200})
               for n in range(1, 501)]  # fmt: skip
    Spool(tmp_path, 16 * 2**20).append(records)  # one file of ~140 kB
    spool = Spool(tmp_path, 8192)
    seen: list[int] = []
    while (segment := spool.oldest()) is not None:
        assert segment.size <= 8192
        assert segment.torn == 0
        seen += [r.seq for r in segment.records]
        spool.remove(segment)
    assert seen == list(range(1, 501))
    assert spool.empty
    assert spool.bytes == 0
