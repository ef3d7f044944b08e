"""EfdWriter into InfluxDB 1.x restarted mid-night (issue 30, "must show" d): events
(QoS 1) and telemetry (QoS 0) published throughout, the server stopped and started
again in the middle; every message of every topic is in the EFD once, counted against
its ``seq``. Needs ``influxd`` and the InfluxDB store (efd-store branch)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cscs.core.broker import EmbeddedBroker
from cscs.core.testing import enabled_csc
from cscs.core.topics import Kind
from cscs.efd.open import open_store
from cscs.efd.records import Measurement
from cscs.efd_writer.csc import EfdWriterCsc

influx: Any = pytest.importorskip("sim.site.influxd", reason="sim/site/influxd.py")

pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(180),
    pytest.mark.skipif(influx.find_influxd() is None, reason="influxd is not installed"),
]

PER_PHASE = 100  # messages of each topic before, during and after the outage
TOPICS = {  # topic under the prefix -> measurement
    "Weather/0/tel/weather": Measurement("Weather", Kind.TELEMETRY, "weather"),
    "Archiver/1/evt/imageArchived": Measurement("Archiver", Kind.EVENT, "imageArchived"),
}


async def test_influxdb_restarted_mid_night_loses_no_sample(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    prefix = f"efdi{index}"
    with influx.private_influx() as server:
        url = server.url("efd")

        def make(number: int, **kwargs: Any) -> EfdWriterCsc:
            return EfdWriterCsc(number, store=lambda: open_store(url), **kwargs)

        make.interface = EfdWriterCsc.interface  # type: ignore[attr-defined]
        config = {"batch_interval": 0.05, "status_interval": 0.1, "retry_max": 0.5}
        async with (
            enabled_csc(make, mosquitto, tmp_path, prefix, config) as efd,  # type: ignore[arg-type]
            efd.remote.stream("efdWriterStatus") as status,
        ):

            async def publish(phase: int) -> None:
                for n in range(phase * PER_PHASE + 1, (phase + 1) * PER_PHASE + 1):
                    for topic, measurement in TOPICS.items():
                        payload = json.dumps({"seq": n, "sent_tai": 1.8e9 + n, "value": n})
                        qos = 0 if measurement.kind is Kind.TELEMETRY else 1
                        assert await efd.bus.publish(f"{prefix}/{topic}", payload.encode(), qos=qos)
                    if n % 10 == 0:
                        await asyncio.sleep(0.01)  # a night's pace, not one burst

            await publish(0)
            await asyncio.to_thread(server.stop)
            await publish(1)  # InfluxDB away: spooled
            # Kept on disk while the store is away (a status may say "down" just before
            # the failed batch is in the spool).
            await status.wait_for(lambda r: not r.data["storeUp"] and r.data["spoolBytes"] > 0, 30)
            await asyncio.to_thread(server.start)
            await publish(2)
            store = open_store(url)
            try:

                def counts() -> dict[str, list[int]]:
                    return {
                        str(m): [r.seq for r in store.records([m], 0, 3e9)] for m in TOPICS.values()
                    }

                expected = list(range(1, 3 * PER_PHASE + 1))
                # Each status is a moment to look at the store (the spool drained).
                await status.wait_for(
                    lambda r: r.data["storeUp"] and r.data["spoolBytes"] == 0
                    and all(len(s) >= len(expected) for s in counts().values()),
                    60,
                )  # fmt: skip
                for name, seqs in counts().items():
                    assert sorted(seqs) == expected, name
            finally:
                store.close()


async def test_a_record_influxdb_refuses_for_good_is_set_aside_and_later_ones_written(
    tmp_path: Path,
) -> None:
    """A server with a small ``max-body-size`` answers 413 to a batch holding one large
    record: the writer bisects, sets that record aside in the dead-letter file, and the
    records around it (and after it) are written (review 30, finding 2)."""
    import structlog

    from cscs.core.transport import Message
    from cscs.efd_writer.recorder import Limits, Recorder
    from cscs.efd_writer.spool import Spool, decode_record

    acks: list[int] = []

    def message(n: int, text: str = "") -> Message:
        body: dict[str, Any] = {"seq": n, "sent_tai": 1.8e9 + n, "value": n}
        body |= {f"text{k}": text for k in range(4)} if text else {}
        return Message("obs/Test/1/evt/scalars", json.dumps(body).encode(),
                       ack=lambda: acks.append(n))  # fmt: skip

    with influx.private_influx(max_body_size=32_768) as server:
        url = server.url("efd_refused")
        limits = Limits(batch_size=50, batch_interval=0.01, queue_capacity=200, retry_max=0.05)
        rec = Recorder(lambda: open_store(url), Spool(tmp_path / "spool", 4096), limits,
                       structlog.get_logger("test"))  # fmt: skip
        for n in range(1, 31):
            await rec.heard(message(n, "x" * 16_000 if n == 11 else ""))
        async with asyncio.timeout(60):
            while rec.queued or not rec.spool.empty:
                await rec.write_batch(await rec.next_batch())
        store = open_store(url)
        try:
            kept = store.records([Measurement("Test", Kind.EVENT, "scalars")], 0, 3e9)
        finally:
            store.close()
    assert [r.seq for r in kept] == [n for n in range(1, 31) if n != 11]
    assert sorted(acks) == list(range(1, 31))
    assert rec.counts["store_refused"] == 1
    lines = (tmp_path / "spool" / "refused" / "refused.jsonl").read_bytes().splitlines()
    assert [decode_record(line).seq for line in lines] == [11]


def test_influxdb_writes_are_posted_in_bodies_capped_by_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of records each well under the server's ``max-body-size`` but together
    over it is written (in several POSTs), not refused as a whole."""
    from cscs.efd import influx_store
    from cscs.efd.records import EfdRecord

    monkeypatch.setattr(influx_store, "_MAX_BODY", 24_000)
    scalars = Measurement("Test", Kind.EVENT, "scalars")
    batch = [EfdRecord(scalars, 1, n, 1.8e9 + n, 1.8e9 + n, {"text": "y" * 10_000})
             for n in range(1, 21)]  # fmt: skip
    with influx.private_influx(max_body_size=32_768) as server:
        store = open_store(server.url("efd_capped"))
        try:
            store.write(batch)  # 200 kB in all
            assert len(store.records([scalars], 0, 3e9)) == 20
        finally:
            store.close()
