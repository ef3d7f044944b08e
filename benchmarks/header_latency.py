"""Header latency: ``endOfImageTelemetry`` → ``largeFileObjectAvailable``.

    python benchmarks/header_latency.py [--exposures 200] [--backend auto]

Starts an embedded broker and, each in its own process (``cscs run``), the Telescope
(mount telemetry at 10 Hz, dome 1 Hz), the Weather station (1 Hz) and the Header Service
for LATISS, all enabled. This process plays the camera: once, as the camera does when it
starts, its hardware description (``focalPlaneSummaryInfo``: without it every header lacks
``CCD_MANU``, ``CCD_TYPE``, ``LSST_NUM`` and ``CCD_SERN``); then for each exposure it
publishes ``startIntegration``, ``endReadout`` and ``endOfImageTelemetry`` and times the
header's announcement. What is measured is complete headers: a header with a missing
keyword is counted, named, and makes the run exit non-zero. Baseline, in the same run:
the command → final-ack round trip to the same Header Service process (one bus hop there
and back), so the ratio is the header's cost in units of the bus's own latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cscs.camera.events import FOCAL_PLANE_SUMMARY_INFO
from cscs.camera.geometry import camera_for_index
from cscs.core.broker import Backend, EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.protocol import encode
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress, Kind
from sim.daq.hardware import focal_plane_hardware

CSCS = (CscAddress("Telescope", 1), CscAddress("Weather", 0), CscAddress("HeaderService", 1))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextlib.asynccontextmanager
async def processes(broker_url: str, state_dir: Path) -> AsyncIterator[None]:
    env = {**os.environ, "CSCS_STATE_DIR": str(state_dir)}
    started = []
    for a in CSCS:
        command = ["run", a.name, "--index", str(a.index), "--broker", broker_url]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cscs", *command, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        started.append(process)
    try:
        yield
    finally:
        for process in started:
            if process.returncode is None:
                process.terminate()
        for process in started:
            await process.wait()


async def exposure(bus: Bus, camera: CscAddress, number: int, seq: int) -> float:
    """Publish one exposure's events; return when endOfImageTelemetry went out."""
    image = f"AT_O_20261121_{number:06d}"
    begin = current_tai()

    async def event(name: str, **data: Any) -> None:
        body = data | {"imageName": image, "seq": seq, "sent_tai": current_tai()}
        await bus.publish(camera.event(name), encode(body), qos=1)

    await event("startIntegration", imageIndex=1, imagesInSequence=1, imageSource="AT",
                imageController="O", imageDate="20261121", imageNumber=number,
                groupId="bench", imageType="OBJECT", exposureTime=15.0,
                timestampAcquisitionStart=begin, timeout=30.0, additionalKeys="",
                additionalValues="")  # fmt: skip
    await event("endReadout", imageIndex=1, imagesInSequence=1, requestedExposureTime=15.0,
                timestampEndOfReadout=begin + 17, sensors="R00_S00")  # fmt: skip
    sent = time.perf_counter()
    await event("endOfImageTelemetry", timestampDateObs=begin, timestampDateEnd=begin + 15,
                exposureTime=15.0, darkTime=15.2, measuredShutterOpenTime=15.0)  # fmt: skip
    return sent


async def hardware(bus: Bus, camera: CscAddress) -> None:
    """The camera's ``focalPlaneSummaryInfo``, retained as the simulated camera sends it:
    the Header Service hears it before the first exposure (same publisher, in order)."""
    payload = focal_plane_hardware(camera_for_index(camera.index)).model_dump()
    body = payload | {"seq": 0, "sent_tai": current_tai()}
    topic = camera.event(FOCAL_PLANE_SUMMARY_INFO.name)
    await bus.publish(topic, encode(body), qos=1, retain=FOCAL_PLANE_SUMMARY_INFO.retained)


async def measure(backend: Backend, count: int) -> int:
    """Print the figures; the number of headers that were not complete."""
    with tempfile.TemporaryDirectory() as state_dir:
        async with (
            EmbeddedBroker(backend) as broker,
            processes(broker.url, Path(state_dir)),
            Bus(broker.address) as bus,
            contextlib.AsyncExitStack() as stack,
        ):
            remotes = [await stack.enter_async_context(Remote(bus, a)) for a in CSCS]
            for remote in remotes:
                await remote.wait_for_state(State.STANDBY, timeout=60)
                await remote.command("start")
                await remote.command("enable")
            telescope, weather, header = remotes
            for remote, topic in ((telescope, "dome"), (weather, "weather")):
                async with remote.stream(topic, kind=Kind.TELEMETRY) as samples:
                    await samples.next(10)
                    await samples.next(10)
            bus_round_trip = []
            for _ in range(count):
                started = time.perf_counter()
                await header.command("setLogLevel", {"level": 20})
                bus_round_trip.append(time.perf_counter() - started)
            latencies, incomplete, missing = [], 0, set()
            camera = CscAddress("Camera", 1)
            await hardware(bus, camera)
            async with header.stream("largeFileObjectAvailable") as announcements:
                for number in range(1, count + 1):
                    sent = await exposure(bus, camera, number, number)
                    announced = await announcements.next(30)
                    latencies.append(time.perf_counter() - sent)
                    if announced.data["missingKeywords"]:
                        incomplete += 1
                        missing.update(announced.data["missingKeywords"].split(","))
            await header.command("disable")
    ms = 1e3
    print(f"{count} exposures, broker {backend}; headers with missing keywords: {incomplete}"
          + (f" ({','.join(sorted(missing))})" if missing else ""))  # fmt: skip
    print(f"{'':32} {'p50 ms':>8} {'p99 ms':>8}")
    for label, values in (
        ("endOfImageTelemetry -> header", latencies),
        ("command round trip (baseline)", bus_round_trip),
    ):
        print(
            f"{label:32} {percentile(values, 0.5) * ms:8.2f} {percentile(values, 0.99) * ms:8.2f}"
        )
    print(
        "ratio header / baseline: "
        f"p50 {statistics.median(latencies) / statistics.median(bus_round_trip):.1f}x, "
        f"p99 {percentile(latencies, 0.99) / percentile(bus_round_trip, 0.99):.1f}x"
    )
    return incomplete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exposures", type=int, default=200)
    parser.add_argument("--backend", default="auto", choices=["auto", "mosquitto", "amqtt"])
    args = parser.parse_args()
    if asyncio.run(measure(args.backend, args.exposures)):
        sys.exit("some headers were not complete: the figures are not of complete headers")


if __name__ == "__main__":
    main()
