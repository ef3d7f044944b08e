"""Archive throughput, latency and memory, against this machine's raw disk in the same run.

    python benchmarks/archive_throughput.py [--images 4] [--backend auto]

Each CSC runs in its own process (``cscs run``) on an embedded broker: Weather, and for
ComCam (then LATISS) the Telescope, Header Service, Camera (2 s readouts) and Archiver.

* Throughput: with the archiver disabled, the camera fills its DAQ buffer with
  ``--images`` ComCam images; then the archiver is enabled and its catch-up archives
  the backlog. Bytes archived per second (DAQ read with checksums, header fetch and
  MD5, FITS with CHECKSUM/DATASUM, MD5 of the file, fsync, rename, catalog row) next
  to writing the same number of bytes with ``write`` + ``fsync`` to the same file
  system, in files of one CCD, measured right after (median of 3 passes: this disk
  swings twofold between passes), and next to the ceiling the ICD's MD5 sets: the same
  writes with each file's MD5 taken, one writer per core. Uncompressed, then ``RICE_1``
  next to the rate of compressing the same pixels with fitsio on one core, in memory.
* Latency: ``endReadout`` → the image's last ``imageArchived``, p50 and p99, for
  LATISS and ComCam exposures taken one after another with the archiver running.
* Peak RSS of the archiver process (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cscs.core.broker import Backend, EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.geometry import SEGMENT_BYTES, SEGMENTS, Camera
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.topics import CscAddress, Kind

BIAS = {"expTime": 0.0, "shutter": False, "imageType": "BIAS"}
CCD_BYTES = len(SEGMENTS) * SEGMENT_BYTES


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def raw_write_rate(directory: Path, total: int, *, md5: bool = False) -> float:
    """Bytes/s writing ``total`` bytes as one-CCD files, each written and fsynced.

    With ``md5``, each file's MD5 is also taken (the ICD's ``checkSum``), with one writer
    per core: the most any archiver could do on this machine, before reading a pixel from
    the DAQ or formatting any FITS.
    """
    block = np.random.default_rng(1).integers(0, 2**18, CCD_BYTES // 4, dtype=np.int32)
    files = max(1, total // CCD_BYTES)

    def write(n: int) -> None:
        with open(directory / f"raw-{n}", "wb") as stream:
            if md5:
                hashlib.md5(block.data).hexdigest()
            stream.write(block.data)
            stream.flush()
            os.fsync(stream.fileno())

    start = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() if md5 else 1) as pool:
        list(pool.map(write, range(files)))
    elapsed = time.perf_counter() - start
    for n in range(files):
        (directory / f"raw-{n}").unlink()
    return files * CCD_BYTES / elapsed


def disk_baselines(directory: Path, total: int, passes: int = 3) -> tuple[float, float]:
    """Medians of ``passes`` measurements of the raw write rate and of the MD5 ceiling:
    the disk here swings twofold from one pass to the next."""
    raw, ceiling = [], []
    for _ in range(passes):
        os.sync()  # a quiet disk: nothing earlier still flushing
        raw.append(raw_write_rate(directory, total))
        os.sync()
        ceiling.append(raw_write_rate(directory, total, md5=True))
    return statistics.median(raw), statistics.median(ceiling)


def compression_rate() -> float:
    """Bytes/s of RICE_1 compressing one CCD's segments with fitsio, one core, in memory."""
    import fitsio

    from sim.daq.pixels import ElectronicsModel, Scene, synthesize_sensor

    segments = synthesize_sensor(
        ElectronicsModel(), Scene("BIAS", 0, 0, 1), Camera.COMCAM.detectors[0]
    )
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as d:
        start = time.perf_counter()
        with fitsio.FITS(f"{d}/c.fits", "rw", clobber=True) as out:
            for pixels in segments:
                out.write(pixels, compress="RICE_1")
        return CCD_BYTES / (time.perf_counter() - start)


@contextlib.asynccontextmanager
async def processes(
    broker: str, state: Path, addresses: list[CscAddress]
) -> AsyncIterator[dict[str, int]]:
    env = {**os.environ, "CSCS_STATE_DIR": str(state)}
    started = {}
    for a in addresses:
        started[str(a)] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cscs", "run", a.name, "--index", str(a.index),
            "--broker", broker, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield {name: p.pid for name, p in started.items()}
    finally:
        for process in started.values():
            if process.returncode is None:
                process.terminate()
        for process in started.values():
            await process.wait()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def session(
    backend: Backend,
    camera: Camera,
    images: int,
    compression: str,
    latency_images: int,
    in_flight: int = 0,
) -> dict[str, Any]:
    index = camera.value
    names = {
        "camera": CscAddress("Camera", index),
        "telescope": CscAddress("Telescope", index),
        "header": CscAddress("HeaderService", index),
        "archiver": CscAddress("Archiver", index),
        "weather": CscAddress("Weather", 0),
    }
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as directory:
        state = Path(directory)
        expected = images * len(camera.detectors)
        baseline_bytes = max(expected, 9) * CCD_BYTES
        config = state / "config" / "Archiver"
        config.mkdir(parents=True)
        shipped = Path(__file__).parents[1] / "cscs" / "archiver" / "config"
        for f in shipped.iterdir():
            (config / f.name).write_bytes(f.read_bytes())
        (config / "bench.yaml").write_text(
            f"compression: '{compression}'\ncatchup_interval: 0\nmin_free_bytes: 0\n"
            + (f"sensors_in_flight: {in_flight}\n" if in_flight else "")
        )
        os.environ["CSCS_CONFIG_DIR"] = str(state / "config")
        async with (
            EmbeddedBroker(backend) as broker,
            processes(broker.url, state, list(names.values())) as pids,
            Bus(broker.address) as bus,
            contextlib.AsyncExitStack() as stack,
        ):
            remotes = {k: await stack.enter_async_context(Remote(bus, a)) for k, a in names.items()}
            for key, remote in remotes.items():
                await remote.wait_for_state(State.STANDBY, timeout=120)
                override = "bench" if key == "archiver" else ""
                await remote.command("start", {"configurationOverride": override}, timeout=60)
                if key != "archiver":
                    await remote.command("enable")
            async with remotes["telescope"].stream("dome", kind=Kind.TELEMETRY) as dome:
                await dome.next(10)
            archiver, cam = remotes["archiver"], remotes["camera"]
            if images:
                await cam.command("takeImages", {"numImages": images, **BIAS}, timeout=600)
                async with archiver.stream("imageArchived") as archived:
                    start = time.perf_counter()
                    await archiver.command("enable")  # catch-up of the backlog starts here
                    total = 0
                    for _ in range(expected):
                        total += (await archived.next(600)).data["byteSize"]
                    elapsed = time.perf_counter() - start
                result["throughput"] = expected * CCD_BYTES / elapsed
                result["file_bytes"] = total
            else:
                await archiver.command("enable")
            latencies = []
            async with cam.stream("endReadout") as ends, archiver.stream("imageArchived") as done:
                for _ in range(latency_images):
                    await cam.command("takeImages", {"numImages": 1, **BIAS}, timeout=120)
                    await ends.next(60)
                    received_at = time.perf_counter()
                    for _ in range(len(camera.detectors)):
                        await done.next(120)
                    latencies.append(time.perf_counter() - received_at)
            result["latency"] = latencies
            result["rss"] = peak_rss(pids[str(names["archiver"])])
        if images:  # the baselines right after the run, on the same file system
            result["raw"], result["ceiling"] = disk_baselines(state, baseline_bytes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="ComCam images in the backlog")
    parser.add_argument("--latency-images", type=int, default=10)
    parser.add_argument("--backend", default="auto", choices=["auto", "mosquitto", "amqtt"])
    parser.add_argument(
        "--sensors-in-flight",
        type=int,
        default=0,
        help="the archiver's sensors_in_flight (default: its configuration)",
    )
    parser.add_argument(
        "--only", choices=["uncompressed", "RICE_1", "latency"], help="run one part only"
    )
    args = parser.parse_args()
    mb = 1e6
    parts = {args.only} if args.only else {"uncompressed", "RICE_1", "latency"}
    for compression in [c for c in ("", "RICE_1") if (c or "uncompressed") in parts]:
        r = asyncio.run(
            session(args.backend, Camera.COMCAM, args.images, compression, 0,
                    args.sensors_in_flight)
        )  # fmt: skip
        label = compression or "uncompressed"
        ours, raw = r["throughput"] / mb, r["raw"] / mb
        print(
            f"ComCam backlog of {args.images} images, {label}: archived {ours:.0f} MB/s of "
            f"pixels; raw write+fsync {raw:.0f} MB/s; ratio {ours / raw:.2f}; files "
            f"{r['file_bytes'] / mb:.0f} MB; archiver peak RSS {r['rss'] / mb:.0f} MB"
        )
        if not compression:
            ceiling = r["ceiling"] / mb
            print(f"  ceiling: write+fsync+MD5 of the same bytes on all {os.cpu_count()} cores "
                  f"{ceiling:.0f} MB/s ({ceiling / raw:.2f} of raw); archiver / ceiling = "
                  f"{ours / ceiling:.2f}")  # fmt: skip
        else:
            rate = compression_rate()
            print(f"  single-core fitsio RICE_1 in memory: {rate / mb:.0f} MB/s; "
                  f"archiver / that = {r['throughput'] / rate:.2f}")  # fmt: skip
    for camera in (Camera.LATISS, Camera.COMCAM) if "latency" in parts else ():
        r = asyncio.run(
            session(args.backend, camera, 0, "", args.latency_images, args.sensors_in_flight)
        )
        lat = r["latency"]
        p50, p99 = statistics.median(lat) * 1e3, percentile(lat, 0.99) * 1e3
        print(
            f"{camera.instrument}: endReadout -> last imageArchived over {len(lat)} images: "
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; archiver peak RSS {r['rss'] / mb:.0f} MB"
        )


if __name__ == "__main__":
    main()
