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
