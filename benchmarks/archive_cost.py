"""What a byte costs: the archiver's CPU seconds per GB, next to two baselines taken in
the same run on the same bytes.

    python -m benchmarks.archive_cost [--runs 3] [--only comcam|rice|lsstcam-dask] [--images N]

CPU time is far steadier than wall time on a shared virtual machine, so this measures
cost, not speed. Each CSC runs in its own process (``cscs run``) on an embedded broker.
For each case the archiver archives a warm-up image, is disabled, and then, ``--runs``
times one after the other: the camera fills its DAQ buffer with a backlog; two
baselines read that backlog from the same DAQ server; the archiver is enabled and its
catch-up archives it.

* Cases: ComCam uncompressed and ``RICE_1`` (compression in worker processes) on the
  local executor, LSSTCam 3 rafts (27 CCDs) on ``dask-local`` with 2 workers.
* Archiver CPU: user + system time of the archiver process and every process under it
  (compression workers, the Dask scheduler, nannies and workers; those already reaped
  through their parent's ``cutime``), from ``/proc``, from enable to the last
  ``imageArchived``; per GB of pixels archived.
* (a) the floor: a process receives every segment of the backlog from the same DAQ
  server with bare ZeroMQ (one read at a time, no checks), copies each sensor's bytes
  once into a reused page-aligned buffer and writes it as the archiver writes a file
  (direct I/O, ``fsync``, rename); its own CPU for that work. (Through the page cache,
  ``writev`` + ``fsync`` of the frames themselves costs more CPU here, not less: the
  kernel's copy, and its page cache to fill and write back.)
* (b) the floor plus what every archived byte must have computed, by a plain reference:
  each segment's ones'-complement sum (FITS ``DATASUM``, numpy) and the file's Adler-32
  (zlib-ng), each taken once.

Printed per case: CPU s/GB of each and the archiver's ratio to (a) and to (b), the wall
MB/s of each beside, median and range over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.archive_scaling import _config_dir
from benchmarks.archive_throughput import BIAS, CCD_BYTES, bring_up, processes
from cscs.camera.geometry import Camera
from cscs.core.broker import EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.topics import CscAddress
from cscs.daq.client import DaqClient

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Case:
    camera: Camera
    camera_override: str
    images: int  # backlog per run
    archiver: dict[str, Any]


CASES = {
    "comcam": Case(Camera.COMCAM, "", 2, {"executor": "local", "sensors_in_flight": 4}),
    "rice": Case(Camera.COMCAM, "", 2,
                 {"executor": "local", "sensors_in_flight": 4, "compression": "RICE_1"}),
    "lsstcam-dask": Case(Camera.LSSTCAM, "lsstcam_3rafts.yaml", 1,
                         {"executor": "dask-local", "dask_workers": 2}),
}  # fmt: skip
LABELS = {"comcam": "ComCam uncompressed", "rice": "ComCam RICE_1 (workers)",
          "lsstcam-dask": "LSSTCam 3 rafts, Dask 2 workers"}  # fmt: skip


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and every live process under it, plus the
    children each has already reaped: what the archiver has spent, all of it."""
    total = 0.0
    for current in descendants(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += sum(int(f) for f in fields[11:15]) / _TICK  # utime stime cutime cstime
    return total  # a process that ended meanwhile: its time is in its parent's cutime


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process under it."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(FileNotFoundError, ValueError):
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return found


# ---- the baselines, run in a process of their own -----------------------------------


def receive_and_write(
    url: str, reads: list[list[str]], directory: str, sums: bool
) -> dict[str, float]:
    """Read each (image, sensor) with bare ZeroMQ in the DAQ protocol, copy its 16 frames
    once into a reused page-aligned buffer and write that as the archiver writes a file
    (direct I/O, ``fsync``, rename: :func:`~cscs.camera.files.write_buffer_atomically`);
    with ``sums``, each segment's DATASUM and the file's Adler-32 too. Returns this
    process's CPU seconds and wall seconds for it, and the bytes written."""
    import mmap

    import numpy as np
    import zmq
    from zlib_ng import zlib_ng

    from cscs.camera.files import direct_length, write_buffer_atomically
    from cscs.daq.protocol import MAGIC, encode

    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.RCVHWM, 0)
    socket.connect(url)
    staging = mmap.mmap(-1, direct_length(CCD_BYTES))
    start_cpu, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    written = 0
    with memoryview(staging) as view:
        for n, (image, sensor) in enumerate(reads):
            request = {"op": "read", "id": n + 1, "image": image, "sensor": sensor}
            socket.send_multipart([MAGIC, encode(request)])
            begin = json.loads(socket.recv_multipart()[1])
            if not begin.get("ok"):
                raise RuntimeError(f"DAQ refused {image} {sensor}: {begin}")
            position = 0
            for frame in socket.recv_multipart(copy=False)[2:]:
                data = frame.buffer
                view[position : position + len(data)] = data  # the one copy
                if sums:
                    total = int(np.add.reduce(np.frombuffer(data, np.uint32), dtype=np.uint64))
                    while total >> 32:
                        total = (total & 0xFFFFFFFF) + (total >> 32)
                position += len(data)
            if sums:
                zlib_ng.adler32(view[:position])
            write_buffer_atomically(Path(directory) / f"{n}.raw", view, position)
            (Path(directory) / f"{n}.raw").unlink()
            written += position
    wall = time.perf_counter() - start
    end_cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (end_cpu.ru_utime - start_cpu.ru_utime) + (end_cpu.ru_stime - start_cpu.ru_stime)
    socket.close(linger=0)
    return {"cpu": cpu, "wall": wall, "bytes": written}


def baseline(
    url: str, reads: list[tuple[str, str]], directory: Path, sums: bool
) -> dict[str, float]:
    """:func:`receive_and_write` in a fresh process (its CPU is its own alone)."""
    work = json.dumps({"url": url, "reads": reads, "directory": str(directory), "sums": sums})
    done = subprocess.run([sys.executable, "-m", "benchmarks.archive_cost", "--baseline", work],
                          check=True, capture_output=True, text=True)  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout)
    return result


# ---- the archiver -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def observed(command: str, pid: int) -> AsyncIterator[None]:
    """``command`` (``{pids}``: the archiver's and its descendants', comma-separated) run
    for the block's duration, then interrupted: a sampler of the archiving alone."""
    if not command:
        yield
        return
    pids = ",".join(str(p) for p in descendants(pid))
    process = await asyncio.create_subprocess_shell("exec " + command.format(pids=pids))
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        await process.wait()


async def session(case: Case, runs: int, sample: str = "") -> list[dict[str, dict[str, float]]]:
    camera = case.camera
    names = {
        "weather": CscAddress("Weather", 0),
        "telescope": CscAddress("Telescope", camera.value),
        "header": CscAddress("HeaderService", camera.value),
        "camera": CscAddress("Camera", camera.value),
        "archiver": CscAddress("Archiver", camera.value),
    }
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as directory:
        state = Path(directory)
        os.environ["CSCS_CONFIG_DIR"] = str(_config_dir(state, case.archiver))
        scratch = state / "baseline"
        scratch.mkdir()
        async with (
            EmbeddedBroker() as broker,
            processes(broker.url, state, list(names.values())) as pids,
            Bus(broker.address) as bus,
            contextlib.AsyncExitStack() as stack,
        ):
            overrides = {"archiver": "bench", "camera": case.camera_override}
            remotes = await bring_up(stack, bus, names, overrides)
            archiver, cam = remotes["archiver"], remotes["camera"]
            url = (await cam.next_event("daqAvailable")).data["url"].split(",")[0]
            pid = pids[str(names["archiver"])]
            async with archiver.stream("imageArchived") as archived:  # warm: buffers, workers
                await archiver.command("enable")
                await cam.command("takeImages", {"numImages": 1, **BIAS}, timeout=900)
                async with DaqClient(url) as daq:
                    first = (await daq.list_images())[-1]
                for _ in first.sensors:
                    await archived.next(900)
                await archiver.command("disable")
            for _ in range(runs):
                async with cam.stream("endReadout") as ends:
                    await cam.command("takeImages", {"numImages": case.images, **BIAS}, timeout=900)
                    images = [(await ends.next(60)).data["imageName"] for _ in range(case.images)]
                reads = [(i, s) for i in images for s in first.sensors]
                floor = await asyncio.to_thread(baseline, url, reads, scratch, False)
                reference = await asyncio.to_thread(baseline, url, reads, scratch, True)
                async with archiver.stream("imageArchived") as archived, observed(sample, pid):
                    before, start = tree_cpu(pid), time.perf_counter()
                    await archiver.command("enable")  # catch-up of the backlog starts here
                    for _ in reads:
                        await archived.next(900)
                    wall = time.perf_counter() - start
                    cpu = tree_cpu(pid) - before
                await archiver.command("disable")
                ours = {"cpu": cpu, "wall": wall, "bytes": len(reads) * CCD_BYTES}
                results.append({"floor": floor, "reference": reference, "archiver": ours})
                shutil.rmtree(state / "archive" / camera.instrument, ignore_errors=True)
    return results


def _per_gb(sample: dict[str, float]) -> float:
    return sample["cpu"] / (sample["bytes"] / 1e9)


def _mbs(sample: dict[str, float]) -> float:
    return sample["bytes"] / 1e6 / sample["wall"]


def _spread(values: list[float], form: str) -> str:
    return (f"{format(statistics.median(values), form)} "
            f"({format(min(values), form)}-{format(max(values), form)})")  # fmt: skip


def report(label: str, results: list[dict[str, dict[str, float]]]) -> str:
    cost = {k: [_per_gb(r[k]) for r in results] for k in ("floor", "reference", "archiver")}
    speed = {k: [_mbs(r[k]) for r in results] for k in ("floor", "reference", "archiver")}
    to_floor = [a / f for a, f in zip(cost["archiver"], cost["floor"], strict=True)]
    to_reference = [a / f for a, f in zip(cost["archiver"], cost["reference"], strict=True)]
    gb = results[0]["archiver"]["bytes"] / 1e9
    return (
        f"{label}: {gb:.2f} GB per run, {len(results)} runs; median (range)\n"
        f"  CPU s/GB   floor (a) {_spread(cost['floor'], '.2f')}, reference (b) "
        f"{_spread(cost['reference'], '.2f')}, archiver {_spread(cost['archiver'], '.2f')}\n"
        f"  archiver / floor {_spread(to_floor, '.2f')}, archiver / reference "
        f"{_spread(to_reference, '.2f')}\n"
        f"  wall MB/s  floor {_spread(speed['floor'], '.0f')}, reference "
        f"{_spread(speed['reference'], '.0f')}, archiver {_spread(speed['archiver'], '.0f')}"
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--baseline":
        work = json.loads(sys.argv[2])
        print(json.dumps(receive_and_write(**work)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=list(CASES), action="append")
    parser.add_argument(
        "--images", type=int, default=0,
        help="images in each run's backlog (default: the case's, 2 ComCam or 1 LSSTCam); "
        "more spread the catch-up's start over more files",
    )  # fmt: skip
    parser.add_argument(
        "--sample", default="", metavar="COMMAND",
        help="a command run while the archiver archives (interrupted when it is done); "
        "{pids}: its processes' ids, comma-separated",
    )  # fmt: skip
    args = parser.parse_args()
    for key in args.only or list(CASES):
        case = CASES[key]
        if args.images:
            case = dataclasses.replace(case, images=args.images)
        results = asyncio.run(session(case, args.runs, args.sample))
        print(report(LABELS[key], results), flush=True)


if __name__ == "__main__":
    main()
