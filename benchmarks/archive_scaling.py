"""Archiving LSSTCam on Dask: three rafts (27 CCDs, 2.0 GB per image) archived in this
process, and on Dask with 1 and 2 worker processes, against the raw disk in the same run.

    python -m benchmarks.archive_scaling [--images 3] [--latency-images 3]

Each CSC runs in its own process (``cscs run``) on an embedded broker: Weather, and for
LSSTCam the Telescope, Header Service, Camera (``lsstcam_3rafts``: 2 s readouts) and
Archiver, with ``executor`` ``local``, then ``dask-local`` with ``dask_workers`` 1 and 2
(each worker runs 2 tasks at once: one reads while the other writes).

* Throughput: the archiver, disabled while the camera fills its DAQ buffer with
  ``--images`` images, is enabled and catch-up archives the backlog: bytes of pixels per
  second, next to this machine's raw write + fsync of the same bytes in files of one CCD
  (a pass right before the archiver's run and two right after; the ratio is taken
  against the faster of page cache and direct I/O, as in ``archive_throughput.py``).
* Latency: ``endReadout`` → the image's 27th ``imageArchived``, p50 and p99, for
  images taken one after another with the archiver running.
* Dask's own cost per task, measured on its own on a LocalCluster of 2 workers: an
  empty task submitted and awaited one at a time (the round trip every sensor pays),
  and 189 at once (one LSSTCam image's worth: what the scheduler adds per task when
  busy). See ``docs/scaling.md`` for what these figures mean for the full focal plane.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.archive_throughput import (
    BIAS,
    CCD_BYTES,
    bring_up,
    disk_rates,
    peak_rss,
    percentile,
    processes,
)
from cscs.core.broker import EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.topics import CscAddress

SENSORS = 27
IMAGE_BYTES = SENSORS * CCD_BYTES
EXECUTORS: dict[str, dict[str, Any]] = {"local": {"executor": "local"},
             "dask, 1 worker": {"executor": "dask-local", "dask_workers": 1},
             "dask, 2 workers": {"executor": "dask-local", "dask_workers": 2}}  # fmt: skip


def _config_dir(state: Path, archiver: dict[str, Any]) -> Path:
    """The shipped configurations, and a `bench` override of the archiver's."""
    root = state / "config"
    here = Path(__file__).parents[1]
    for name, shipped in (("Archiver", here / "cscs" / "archiver" / "config"),
                          ("Camera", here / "sim" / "daq" / "config")):  # fmt: skip
        shutil.copytree(shipped, root / name)
    settings = {"catchup_interval": 0, "min_free_bytes": 0, "sensors_in_flight": 8,
                "dask_threads_per_worker": 2, "header_timeout": 30} | archiver  # fmt: skip
    lines = [f"{key}: {value!r}" if isinstance(value, str) else f"{key}: {value}"
             for key, value in settings.items()]  # fmt: skip
    (root / "Archiver" / "bench.yaml").write_text("\n".join(lines) + "\n")
    return root


async def session(
    archiver_settings: dict[str, Any], images: int, latency_images: int
) -> dict[str, Any]:
    names = {
        "weather": CscAddress("Weather", 0),
        "telescope": CscAddress("Telescope", 3),
        "header": CscAddress("HeaderService", 3),
        "camera": CscAddress("Camera", 3),
        "archiver": CscAddress("Archiver", 3),
    }
    overrides = {"archiver": "bench", "camera": "lsstcam_3rafts.yaml"}
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as directory:
        state = Path(directory)
        os.environ["CSCS_CONFIG_DIR"] = str(_config_dir(state, archiver_settings))
        async with (
            EmbeddedBroker() as broker,
            processes(broker.url, state, list(names.values())) as pids,
            Bus(broker.address) as bus,
            contextlib.AsyncExitStack() as stack,
        ):
            remotes = await bring_up(stack, bus, names, overrides)
            archiver, camera = remotes["archiver"], remotes["camera"]
            await camera.command("takeImages", {"numImages": images, **BIAS}, timeout=900)
            disk = await asyncio.to_thread(disk_rates, state, images * IMAGE_BYTES, 1)
            async with archiver.stream("imageArchived") as archived:
                start = time.perf_counter()
                await archiver.command("enable")  # catch-up of the backlog starts here
                for _ in range(images * SENSORS):
                    await archived.next(900)
                result["throughput"] = images * IMAGE_BYTES / (time.perf_counter() - start)
            latencies = []
            async with (
                camera.stream("endReadout") as ends,
                archiver.stream("imageArchived") as done,
            ):
                for _ in range(latency_images):
                    await camera.command("takeImages", {"numImages": 1, **BIAS}, timeout=300)
                    await ends.next(120)
                    read_out = time.perf_counter()
                    for _ in range(SENSORS):
                        await done.next(300)
                    latencies.append(time.perf_counter() - read_out)
            result["latency"] = latencies
            result["rss"] = peak_rss(pids[str(names["archiver"])])
        result["disk"] = disk_rates(state, images * IMAGE_BYTES, 2, into=disk).medians()
    return result


async def dask_overhead(tasks: int = 189, rounds: int = 200) -> tuple[float, float]:
    """Seconds per empty task: awaited one at a time, and ``tasks`` submitted at once."""
    from distributed import Client, LocalCluster

    async with (
        LocalCluster(n_workers=2, threads_per_worker=2, processes=True, asynchronous=True,
                     dashboard_address=":0", silence_logs=40) as cluster,
        Client(cluster, asynchronous=True) as client,
    ):  # fmt: skip
        await client.submit(int, 0, pure=False)  # warm
        start = time.perf_counter()
        for n in range(rounds):
            await client.submit(int, n, pure=False)
        one_at_a_time = (time.perf_counter() - start) / rounds
        start = time.perf_counter()
        await client.gather(client.map(int, range(tasks), pure=False))
        batched = (time.perf_counter() - start) / tasks
    return one_at_a_time, batched


def catalog_rate(url: str, rows: int = 189) -> float:
    """Rows per second the archiver's catalog records one at a time, as the archiver
    does (each its own transaction: one LSSTCam image is 189)."""
    from cscs.camera.geometry import Camera
    from cscs.catalog import ArchivedFile, Catalog

    catalog = Catalog(url)
    try:
        image = f"MC_O_20261122_{os.getpid() % 1000000:06d}"
        detectors = Camera.LSSTCAM.detectors[:rows]
        start = time.perf_counter()
        for detector in detectors:
            catalog.record(ArchivedFile(
                image, detector.name, "LSSTCam", "20261122", f"/archive/{detector.name}.fits",
                75_000_000, "0a0b0c0d", "adler32", True, "", f"tcp://daq {image}",
                "file:///h.yaml", "0" * 32, "bench", 0.0, 0.0,
            ))  # fmt: skip
        return len(detectors) / (time.perf_counter() - start)
    finally:
        catalog.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3, help="3-raft images in the backlog")
    parser.add_argument("--latency-images", type=int, default=3)
    parser.add_argument("--only", choices=list(EXECUTORS), help="one executor only")
    parser.add_argument("--postgres", default="", help="also time catalog rows on this URL")
    args = parser.parse_args()
    if args.images > 4:
        parser.error("the camera's 8 GiB DAQ buffer holds 4 three-raft images")
    needed = (args.images + args.latency_images) * IMAGE_BYTES * 1.1
    free = shutil.disk_usage(os.environ.get("TMPDIR", "/tmp")).free
    if free < needed:
        parser.error(f"needs {needed / 1e9:.0f} GB free under TMPDIR, has {free / 1e9:.0f} GB")
    mb = 1e6
    for label, settings in EXECUTORS.items():
        if args.only and label != args.only:
            continue
        r = asyncio.run(session(settings, args.images, args.latency_images))
        disk, lat = r["disk"], r["latency"]
        ours, raw = r["throughput"] / mb, disk.raw / mb
        p50, p99 = statistics.median(lat), percentile(lat, 0.99)
        print(
            f"{label}: {args.images} images of {SENSORS} CCDs ({IMAGE_BYTES / 1e9:.2f} GB each) "
            f"archived at {ours:.0f} MB/s; raw write+fsync of the same bytes "
            f"{raw:.0f} MB/s (page cache {disk.buffered / mb:.0f}, direct {disk.direct / mb:.0f}); "
            f"ratio {ours / raw:.2f}\n"
            f"  endReadout -> 27th imageArchived over {len(lat)} images: p50 {p50:.1f} s, "
            f"p99 {p99:.1f} s; archiver CSC peak RSS {r['rss'] / mb:.0f} MB",
            flush=True,
        )
    with tempfile.TemporaryDirectory() as directory:
        from cscs.catalog import sqlite_url

        rates = {
            "SQLite (WAL, synchronous=FULL)": catalog_rate(sqlite_url(Path(directory) / "c.sqlite"))
        }
    if args.postgres:
        rates["PostgreSQL"] = catalog_rate(args.postgres)
    for name, rate in rates.items():
        print(f"catalog rows one at a time, {name}: {rate:.0f}/s "
              f"({189 / rate:.2f} s per LSSTCam image)")  # fmt: skip
    one, batched = asyncio.run(dask_overhead())
    print(f"Dask per empty task (LocalCluster, 2 workers): {one * 1e3:.2f} ms awaited one at a "
          f"time; {batched * 1e3:.2f} ms each when 189 are submitted at once "
          f"({batched * 189:.2f} s per LSSTCam image's worth)")  # fmt: skip


if __name__ == "__main__":
    main()
