"""The Telemetry Gateway's throughput and added latency, against a direct publish →
subscribe on the same broker in the same run; and how fast a backlog drains.

    python benchmarks/gateway_throughput.py [--messages 2000] [--backlog 10000]

* baseline: a QC summary published on the DM topic and received by a subscriber of that
  topic, one after another (QoS 1): messages per second and latency p50/p99;
* through TelemetryGateway:0: the same summaries published on the DM side and received
  as ``imageQuality`` on the OCS side (parsed, checked, judged by the rules, queued on
  disk and sent): the same figures, and their ratios to the baseline;
* a backlog of ``--backlog`` messages left in the gateway's queue (as an outage would)
  sent when it starts: messages per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cscs.core.broker import EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.publisher import stamp
from cscs.core.remote import Remote
from cscs.core.settings import Settings
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress
from cscs.telemetry_gateway.csc import TelemetryGatewayCsc
from cscs.telemetry_gateway.interface import ImageQuality
from cscs.telemetry_gateway.outbox import Outbox

PREFIX, DM = "bench", "dm"
ADDRESS = CscAddress("TelemetryGateway", 0, PREFIX)


def summary(number: int) -> dict[str, object]:
    image = f"AT_O_20261121_{number:06d}"
    return {"imageName": image, "instrument": "LATISS", "nSensors": 1, "psfFwhm": 0.8,
            "psfFwhmMin": 0.8, "psfFwhmMax": 0.8, "psfE1": 0.01, "psfE2": 0.0,
            "ellipticity": 0.01, "skyMean": 40.0, "skyRms": 6.5, "zeroPoint": 27.5,
            "nSources": 100, "sent_tai": float(number)}  # fmt: skip


async def one_by_one(bus: Bus, source: str, sink: str, count: int) -> tuple[float, list[float]]:
    """Publish ``count`` summaries on ``source``, each after the last arrived on
    ``sink``: seconds in all and each message's latency."""
    latencies = []
    async with bus.subscription(sink) as received:
        started = time.perf_counter()
        for number in range(1, count + 1):
            sent = time.perf_counter()
            await bus.publish(f"{source}/AT_O_20261121_{number:06d}",
                              json.dumps(summary(number)).encode(), qos=1)  # fmt: skip
            await received.get(30)
            latencies.append(time.perf_counter() - sent)
    return time.perf_counter() - started, latencies


def describe(what: str, seconds: float, latencies: list[float], base: float | None) -> float:
    rate = len(latencies) / seconds
    cuts = statistics.quantiles(latencies, n=100)
    ratio = f"; {rate / base:.2f} x the baseline's rate" if base else ""
    print(f"{what}: {rate:.0f} messages/s, latency p50 {cuts[49] * 1e3:.2f} ms, "
          f"p99 {cuts[98] * 1e3:.2f} ms{ratio}")  # fmt: skip
    return rate


async def main(messages: int, backlog: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cscs-gateway-bench-") as directory:
        state, config = Path(directory) / "state", Path(directory) / "config"
        (config / "TelemetryGateway").mkdir(parents=True)
        (config / "TelemetryGateway" / "bench.yaml").write_text(yaml.safe_dump({"rules": []}))
        settings = Settings(prefix=PREFIX, state_dir=state, config_dir=config)
        async with EmbeddedBroker("auto") as broker, broker.transport() as bus:
            print(f"broker: {broker.backend}; {messages} messages one after another")
            topic = f"{DM}/qc/LATISS"
            seconds, latencies = await one_by_one(bus, topic, f"{topic}/#", messages)
            base = describe("direct publish -> subscribe (baseline)", seconds, latencies, None)
            async with (
                TelemetryGatewayCsc(0, broker=broker, settings=settings) as csc,
                Remote(bus, ADDRESS) as gateway,
            ):
                await gateway.command("start", {"configurationOverride": "bench"})
                await gateway.command("enable")
                sink = ADDRESS.event("imageQuality")
                seconds, latencies = await one_by_one(bus, topic, sink, messages)
                describe("through TelemetryGateway:0", seconds, latencies, base)
                await gateway.command("disable")
                await gateway.command("standby")
                await csc.close()
            # A backlog, as an outage leaves it, sent when the gateway starts again.
            outbox = Outbox(state / "TelemetryGateway-0-outbox.sqlite", backlog + 1)
            fields = {k: v for k, v in summary(0).items() if k != "sent_tai"}
            quality = ImageQuality.model_validate(fields)
            for _ in range(backlog):
                outbox.put(sink, lambda seq: stamp(quality, seq, current_tai()), True, 0.0)
            outbox.close()
            async with (
                bus.subscription(sink) as received,
                TelemetryGatewayCsc(0, broker=broker, settings=settings),
                Remote(bus, ADDRESS) as gateway,
            ):
                await gateway.command("start", {"configurationOverride": "bench"})
                started = time.perf_counter()
                await gateway.command("enable")  # a disabled gateway holds its queue
                for _ in range(backlog):
                    await received.get(60)
                elapsed = time.perf_counter() - started
            print(f"a backlog of {backlog} drained in {elapsed:.1f} s: "
                  f"{backlog / elapsed:.0f} messages/s")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--backlog", type=int, default=10_000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.backlog))
    sys.exit(0)
