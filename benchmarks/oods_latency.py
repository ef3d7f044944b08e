"""The OODS's latency, next to the archiver's, in the same run.

    python -m benchmarks.oods_latency [--blocks 3] [--images 5] [--camera comcam|latiss]

Each CSC runs in its own process (``cscs run``) on an embedded broker: Weather, and for
the camera its Telescope, Header Service, Camera (``fast``: 0.2 s readouts), Archiver
and OODS. Images (BIAS) are taken one after another, each once the last is in, in
``--blocks`` blocks (this machine's speed drifts over minutes) of two phases:

* **without the OODS** (it is DISABLED: it registers nothing): ``endReadout`` → the
  image's last ``imageArchived``, p50 and p99 — the archiver's latency budget alone;
* **with the OODS** (ENABLED): the same, and ``endReadout`` → ``imageInOODS`` naming
  every file of the image (in the Butler repository and ConsDB), p50 and p99.

The first pair says whether registering beside the archiver costs it anything (the
same archive, the same disk, two cores shared); the second what the OODS adds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.archive_throughput import BIAS, bring_up, percentile, processes
from cscs.camera.geometry import Camera
from cscs.core.broker import Backend, EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.remote import Received, Remote
from cscs.core.topics import CscAddress


def of(image: str, sensors: int = 0) -> Callable[[Received], bool]:
    """A message about ``image`` (naming ``sensors`` sensors, if given)."""

    def matches(message: Received) -> bool:
        if message.data.get("imageName") != image:
            return False
        return not sensors or len(str(message.data.get("sensors")).split(",")) == sensors

    return matches


async def take(
    cam: Remote, archiver: Remote, oods: Remote | None, camera: Camera, images: int
) -> tuple[list[float], list[float]]:
    """(endReadout → last imageArchived, endReadout → imageInOODS) of each image, s."""
    archived_after: list[float] = []
    in_oods_after: list[float] = []
    whole = len(camera.detectors)
    async with (
        cam.stream("endReadout") as ends,
        archiver.stream("imageArchived") as archived,
        contextlib.AsyncExitStack() as stack,
    ):
        said = await stack.enter_async_context(oods.stream("imageInOODS")) if oods else None
        for _ in range(images):
            await cam.command("takeImages", {"numImages": 1, **BIAS}, timeout=120)
            image = (await ends.next(60)).data["imageName"]
            read_out = time.perf_counter()
            for _ in range(whole):
                await archived.wait_for(of(image), 120)
            archived_after.append(time.perf_counter() - read_out)
            if said is not None:
                await said.wait_for(of(image, whole), 120)
                in_oods_after.append(time.perf_counter() - read_out)
    return archived_after, in_oods_after


async def measure(backend: Backend, camera: Camera, images: int, blocks: int) -> None:
    index = camera.value
    names = {
        "camera": CscAddress("Camera", index),
        "telescope": CscAddress("Telescope", index),
        "header": CscAddress("HeaderService", index),
        "archiver": CscAddress("Archiver", index),
        "oods": CscAddress("OODS", index),
        "weather": CscAddress("Weather", 0),
    }
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as directory:
        state = Path(directory)
        async with (
            EmbeddedBroker(backend) as broker,
            processes(broker.url, state, list(names.values())),
            Bus(broker.address) as bus,
            contextlib.AsyncExitStack() as stack,
        ):
            overrides = {"camera": "fast", "telescope": "fast"}
            remotes = await bring_up(stack, bus, names, overrides, start_timeout=120)
            cam, archiver, oods = remotes["camera"], remotes["archiver"], remotes["oods"]
            await archiver.command("enable")
            alone: list[float] = []
            beside: list[float] = []
            in_oods: list[float] = []
            for _ in range(blocks):  # interleaved: this machine's speed drifts over minutes
                await oods.command("disable")
                await take(cam, archiver, None, camera, 1)  # settled: buffers, caches
                archived, _ = await take(cam, archiver, None, camera, images)
                alone += archived
                # Enabled, it reconciles what was archived meanwhile: measured once done.
                await oods.command("enable")
                await take(cam, archiver, oods, camera, 1)
                archived, said = await take(cam, archiver, oods, camera, images)
                beside += archived
                in_oods += said

    def line(what: str, values: list[float]) -> str:
        p50, p99 = percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3
        return f"  {what:<48} p50 {p50:7.0f} ms   p99 {p99:7.0f} ms"

    print(f"{camera.instrument}, {len(camera.detectors)} file(s) per image, {blocks} x "
          f"{images} images per phase, interleaved ({backend} broker):")  # fmt: skip
    print(line("endReadout -> last imageArchived, OODS disabled", alone))
    print(line("endReadout -> last imageArchived, OODS enabled", beside))
    print(line("endReadout -> imageInOODS (every file)", in_oods))
    ratio = percentile(beside, 0.5) / percentile(alone, 0.5)
    added = (percentile(in_oods, 0.5) - percentile(beside, 0.5)) * 1e3
    print(f"  archiver p50 with the OODS / without: {ratio:.2f}; the OODS adds {added:.0f} ms "
          "(p50) after the last file is archived")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5, help="per phase of each block")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--camera", default="comcam", choices=["comcam", "latiss"])
    parser.add_argument("--backend", default="auto", choices=["auto", "mosquitto", "amqtt"])
    args = parser.parse_args()
    camera = Camera.COMCAM if args.camera == "comcam" else Camera.LATISS
    asyncio.run(measure(args.backend, camera, args.images, args.blocks))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
