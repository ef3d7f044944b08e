"""Archive throughput, latency and memory, against this machine's raw disk in the same run.

    python benchmarks/archive_throughput.py [--images 5] [--backend auto]

Each CSC runs in its own process (``cscs run``) on an embedded broker: Weather, and for
ComCam (then LATISS) the Telescope, Header Service, Camera (2 s readouts) and Archiver.

* Throughput: the archiver, enabled, archives one ComCam image (a running archiver is
  warm: its buffers exist), is disabled while the camera fills its DAQ buffer with
  ``--images`` more, then is enabled again and its catch-up archives the backlog. Bytes
  archived per second (DAQ read with checksums, header fetch and MD5, FITS with
  CHECKSUM/DATASUM, the file's checksum (Adler-32 by default), fsync, rename, catalog
  row) next to this machine's raw write of the same number of bytes to the same file
  system, in files of one CCD: ``write`` + ``fsync`` through the page cache, and with
  direct I/O, one pass right before the archiver's run and two right after (medians of
  the 3: both swing severalfold within the hour on these virtual machines). The ratio
  is taken against the faster of the two. For context, the same bytes written as
  the archiver writes them (direct I/O from a reused buffer) with each file's checksum
  taken, one writer per core: the most any archiver could do here.
  Uncompressed, then ``RICE_1`` next to the rate of compressing the same pixels with
  fitsio on one core, in memory, measured right before and right after the archiver's
  run (this machine's speed drifts by tens of percent over minutes).
* Latency: ``endReadout`` → the image's last ``imageArchived``, p50 and p99, for
  LATISS and ComCam exposures taken one after another with the archiver running.
* Peak RSS of the archiver process (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import mmap
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cscs.camera.checksum import buffer_checksum
from cscs.camera.files import direct_length, write_buffer_atomically
from cscs.camera.geometry import SEGMENT_BYTES, SEGMENTS, Camera
from cscs.core.broker import Backend, EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.topics import CscAddress, Kind
from sim.daq.camera import CameraConfig

BIAS = {"expTime": 0.0, "shutter": False, "imageType": "BIAS"}
CCD_BYTES = len(SEGMENTS) * SEGMENT_BYTES


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Baselines:
    """Medians over passes (bytes/s), and the buffered passes' range."""

    buffered: float
    buffered_range: tuple[float, float]
    direct: float
    ceiling: float

    @property
    def raw(self) -> float:
        """The machine's raw write: the faster of the two ways to write the same bytes."""
        return max(self.buffered, self.direct)


def _one_ccd() -> mmap.mmap:
    """One CCD's bytes in a page-aligned buffer (direct I/O needs one), with room to pad."""
    buffer = mmap.mmap(-1, direct_length(CCD_BYTES))
    buffer.write(np.random.default_rng(1).bytes(CCD_BYTES))
    return buffer


def raw_write_rate(directory: Path, total: int, *, direct: bool) -> float:
    """Bytes/s writing ``total`` bytes as one-CCD files, each written and fsynced: through
    the page cache (``write`` + ``fsync``), or with ``O_DIRECT`` from the same buffer."""
    files = max(1, total // CCD_BYTES)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (getattr(os, "O_DIRECT", 0) if direct else 0)
    buffer = _one_ccd()
    with memoryview(buffer) as view:
        start = time.perf_counter()
        for n in range(files):
            fd = os.open(directory / f"raw-{n}", flags, 0o644)
            try:
                os.write(fd, view[: direct_length(CCD_BYTES)])
                os.ftruncate(fd, CCD_BYTES)
                os.fsync(fd)
            finally:
                os.close(fd)
        elapsed = time.perf_counter() - start
    for n in range(files):
        (directory / f"raw-{n}").unlink()
    return files * CCD_BYTES / elapsed


def ceiling_rate(directory: Path, total: int) -> float:
    """Bytes/s writing ``total`` bytes as the archiver does (direct I/O from reused
    page-aligned buffers, atomic rename) with each file's checksum taken (the archiver's
    default algorithm), one writer per
    core: no archiver on this machine can do more, before it reads a pixel from the
    DAQ or formats any FITS."""
    files = max(1, total // CCD_BYTES)
    writers = os.cpu_count() or 1
    buffers = [_one_ccd() for _ in range(writers)]

    def write(n: int) -> None:
        with memoryview(buffers[n % writers]) as view:
            buffer_checksum("adler32", view[:CCD_BYTES])
            write_buffer_atomically(directory / f"ceiling-{n}", view, CCD_BYTES)

    start = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:  # n % writers: one file per buffer at a time
        for first in range(0, files, writers):
            list(pool.map(write, range(first, min(files, first + writers))))
    elapsed = time.perf_counter() - start
    for n in range(files):
        (directory / f"ceiling-{n}").unlink()
    return files * CCD_BYTES / elapsed


@dataclass
class DiskRates:
    """Every pass of each raw measurement, bytes/s."""

    buffered: list[float]
    direct: list[float]
    ceiling: list[float]

    def medians(self) -> Baselines:
        return Baselines(
            buffered=statistics.median(self.buffered),
            buffered_range=(min(self.buffered), max(self.buffered)),
            direct=statistics.median(self.direct),
            ceiling=statistics.median(self.ceiling),
        )


def disk_rates(
    directory: Path, total: int, passes: int, into: DiskRates | None = None
) -> DiskRates:
    """``passes`` measurements of each kind: the raw rate through the page cache swings
    between ~300 and ~1700 MB/s on these virtual machines (a page the guest has not
    touched lately costs the host a fault), and direct writes between ~400 and ~1900
    MB/s within an hour when the host is busy (steal time): the benchmark takes a pass
    right before the archiver's run and two right after, and compares to their medians."""
    rates = into or DiskRates([], [], [])
    buffered, direct, ceiling = rates.buffered, rates.direct, rates.ceiling
    for _ in range(passes):
        for samples, measure in (
            (buffered, functools.partial(raw_write_rate, direct=False)),
            (direct, functools.partial(raw_write_rate, direct=True)),
            (ceiling, ceiling_rate),
        ):
            os.sync()  # a quiet disk: nothing earlier still flushing
            samples.append(measure(directory, total))
    return rates


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


async def bring_up(
    stack: contextlib.AsyncExitStack,
    bus: Bus,
    names: dict[str, CscAddress],
    overrides: dict[str, str],
    *,
    start_timeout: float = 120.0,
) -> dict[str, Remote]:
    """A Remote to each CSC process, each started (with its override) and all but the
    archiver enabled; returns once the header service can have heard the dome."""
    remotes = {k: await stack.enter_async_context(Remote(bus, a)) for k, a in names.items()}
    for key, remote in remotes.items():
        await remote.wait_for_state(State.STANDBY, timeout=120)
        await remote.command("start", {"configurationOverride": overrides.get(key, "")},
                             timeout=start_timeout)  # fmt: skip
        if key != "archiver":
            await remote.command("enable")
    async with remotes["telescope"].stream("dome", kind=Kind.TELEMETRY) as dome:
        await dome.next(10)
    return remotes


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
            remotes = await bring_up(stack, bus, names, {"archiver": "bench"}, start_timeout=60)
            archiver, cam = remotes["archiver"], remotes["camera"]
            if images:
                async with archiver.stream("imageArchived") as archived:
                    await archiver.command("enable")
                    await cam.command("takeImages", {"numImages": 1, **BIAS}, timeout=600)
                    for _ in camera.detectors:
                        await archived.next(600)
                    await archiver.command("disable")
                await cam.command("takeImages", {"numImages": images, **BIAS}, timeout=600)
                # This machine's speed drifts by tens of percent over minutes: the one-core
                # baseline is taken right before and right after the run it is compared to.
                # (in a thread: the bus must keep answering the broker's keepalive)
                single_core = [await asyncio.to_thread(compression_rate)] if compression else []
                disk = await asyncio.to_thread(disk_rates, state, baseline_bytes, 1)
                async with archiver.stream("imageArchived") as archived:
                    start = time.perf_counter()
                    await archiver.command("enable")  # catch-up of the backlog starts here
                    total = 0
                    for _ in range(expected):
                        total += (await archived.next(600)).data["byteSize"]
                    elapsed = time.perf_counter() - start
                if compression:
                    single_core.append(await asyncio.to_thread(compression_rate))
                result["single_core"] = single_core
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
        if images:  # and two passes right after the run, on the same file system
            result["passes"] = disk_rates(state, baseline_bytes, 2, into=disk)
            result["baselines"] = result["passes"].medians()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5, help="ComCam images in the backlog")
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
    backlog = (args.images + 1) * len(Camera.COMCAM.detectors) * CCD_BYTES
    store = CameraConfig().store_bytes
    if backlog > store:
        parser.error(
            f"--images {args.images}: the backlog and the warm-up image need "
            f"{backlog / 1e9:.1f} GB of DAQ buffer, the simulated camera keeps "
            f"{store / 1e9:.1f} GB; the oldest would be evicted before archiving"
        )
    mb = 1e6
    parts = {args.only} if args.only else {"uncompressed", "RICE_1", "latency"}
    for compression in [c for c in ("", "RICE_1") if (c or "uncompressed") in parts]:
        r = asyncio.run(
            session(args.backend, Camera.COMCAM, args.images, compression, 0,
                    args.sensors_in_flight)
        )  # fmt: skip
        label = compression or "uncompressed"
        ours, disk = r["throughput"] / mb, r["baselines"]
        raw = disk.raw / mb
        low, high = (x / mb for x in disk.buffered_range)
        print(
            f"ComCam backlog of {args.images} images, {label}: archived {ours:.0f} MB/s of "
            f"pixels; files {r['file_bytes'] / mb:.0f} MB; archiver peak RSS "
            f"{r['rss'] / mb:.0f} MB\n"
            f"  raw write+fsync of the same bytes, same file system: through the page cache "
            f"{disk.buffered / mb:.0f} MB/s ({low:.0f}-{high:.0f}), direct "
            f"{disk.direct / mb:.0f} MB/s (before, after: "
            f"{', '.join(f'{x / mb:.0f}' for x in r['passes'].direct)})\n"
            f"  ratio archived / raw (the faster, {raw:.0f} MB/s): {ours / raw:.2f}"
        )
        if not compression:
            ceiling = disk.ceiling / mb
            print(f"  ceiling: the same bytes written directly with their Adler-32 on all "
                  f"{os.cpu_count()} cores {ceiling:.0f} MB/s ({ceiling / raw:.2f} of raw); "
                  f"archiver / ceiling = {ours / ceiling:.2f}")  # fmt: skip
        else:
            before, after = r["single_core"]
            rate = (before + after) / 2
            print(f"  single-core fitsio RICE_1 in memory, right before and after: "
                  f"{before / mb:.0f} and {after / mb:.0f} MB/s; archiver / their mean = "
                  f"{r['throughput'] / rate:.2f}")  # fmt: skip
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
