"""``cscs demo``: start the embedded broker and every CSC that exists, each in its own
process (the same ``cscs run`` a user would type), and run a short night as the OCS
would: biases, darks, flats, then science exposures on two targets with filter changes.

Every CSC takes part: the camera and its DAQ, the telescope and weather simulators,
the header service and the archiver. Every archived file is then re-read here, with
its FITS checksums verified and its MD5 compared with the archiver's announcement;
every header document is fetched and its MD5 checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

from astropy.io import fits

from cscs.core.broker import Backend, EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.geometry import Camera
from cscs.core.observatory import OBSERVATORY, astropy_time
from cscs.core.remote import EventStream, Remote
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress, Kind
from sim.ocs.operator import show_status

__all__ = ["run_demo"]

BIAS = {"expTime": 0.0, "shutter": False, "imageType": "BIAS"}
DARK = {"expTime": 1.0, "shutter": False, "imageType": "DARK"}
FLAT = {"expTime": 1.0, "shutter": True, "imageType": "FLAT"}
SCIENCE = {"expTime": 2.0, "shutter": True, "imageType": "OBJECT"}


@dataclass
class NightLog:
    taken: int = 0
    sensors_per_image: int = 1
    files: int = 0  # archived and verified
    files_with_header: int = 0
    headers: int = 0
    headers_complete: int = 0
    bytes_archived: int = 0
    archive: set[str] = field(default_factory=set)  # directories written
    ended: dict[str, float] = field(default_factory=dict)  # image -> endReadout seen
    archived: dict[str, int] = field(default_factory=dict)  # image -> files so far
    latencies: list[float] = field(default_factory=list)  # endReadout -> last file
    problems: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def note(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def settled(self) -> bool:
        """Every file of every image taken is checked, and every header has come."""
        expected = self.taken * self.sensors_per_image
        return self.files + len(self.problems) >= expected and self.headers >= self.taken


async def _spawn(
    address: CscAddress, broker_url: str, env: Mapping[str, str]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", "run", address.name, "--index", str(address.index),
        "--broker", broker_url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **env},
    )  # fmt: skip


async def _stop(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    for process in processes:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def _targets() -> list[dict[str, Any]]:
    """Two targets well above the horizon now: east and west of the meridian."""
    lst = astropy_time(current_tai()).sidereal_time("apparent", longitude=OBSERVATORY.lon).deg
    return [
        {"ra": round((lst - 15.0) % 360, 4), "dec": -35.0, "object": "demo field east",
         "program": "DEMO", "rotatorAngle": 0.0},
        {"ra": round((lst + 10.0) % 360, 4), "dec": -50.0, "object": "demo field west",
         "program": "DEMO", "rotatorAngle": 15.0},
    ]  # fmt: skip


async def _note_ends(events: EventStream, log: NightLog) -> None:
    async for event in events:
        log.ended[event.data["imageName"]] = time.perf_counter()


def _verify_file(event: dict[str, Any]) -> str:
    """Re-read an archived file: FITS checksums, MD5 and size; '' if all is well."""
    path = Path(urlparse(event["url"]).path)
    data = path.read_bytes()
    if len(data) != event["byteSize"] or hashlib.md5(data).hexdigest() != event["checkSum"]:
        return f"{path}: size or MD5 differs from imageArchived"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(path, checksum=True) as hdus:
            if len(hdus) != 17:
                return f"{path}: {len(hdus)} HDUs, expected 17"
    bad = [str(w.message) for w in caught if "checksum" in str(w.message).lower()]
    return f"{path}: {bad[0]}" if bad else ""


async def _verify_archive(events: EventStream, log: NightLog, out: TextIO) -> None:
    """Each imageArchived: re-read the file and check it."""
    async for event in events:
        if event.name not in ("imageArchived", "imageRetrievalFailed"):
            continue
        data = event.data
        image = data["imageName"]
        if event.name == "imageRetrievalFailed":
            log.problems.append(f"{image} {data['sensor']}: {data['description']}")
            await log.note()
            continue
        problem = await asyncio.to_thread(_verify_file, data)
        if problem:
            log.problems.append(problem)
            await log.note()
            continue
        log.files += 1
        log.files_with_header += data["headerComplete"]
        log.bytes_archived += data["byteSize"]
        log.archive.add(str(Path(urlparse(data["url"]).path).parents[3]))
        log.archived[image] = log.archived.get(image, 0) + 1
        if log.archived[image] == log.sensors_per_image:
            latency = time.perf_counter() - log.ended.get(image, time.perf_counter())
            log.latencies.append(latency)
            print(
                f"  {image}: {log.sensors_per_image} file(s) archived, re-read and verified "
                f"{latency * 1e3:.0f} ms after endReadout",
                file=out,
                flush=True,
            )
        await log.note()


async def _check_headers(events: EventStream, log: NightLog, out: TextIO) -> None:
    """Fetch each announced header document and check its size and MD5."""
    async for event in events:
        data = event.data
        path = Path(urlparse(data["url"]).path)
        body = await asyncio.to_thread(path.read_bytes)
        if len(body) != data["byteSize"] or hashlib.md5(body).hexdigest() != data["checkSum"]:
            log.problems.append(f"header of {data['id']} does not match its announcement")
            await log.note()
            continue
        log.headers += 1
        missing = data["missingKeywords"]
        log.headers_complete += not missing
        if missing:
            print(f"  {data['id']}: header lacks {missing}", file=out, flush=True)
        await log.note()


async def run_demo(
    backend: Backend = "auto",
    camera: Camera = Camera.LATISS,
    fast: bool = False,
    state_dir: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Run the night; 0 only if every image was read back and verified, every header
    arrived complete and intact, and every CSC exited cleanly."""
    index = camera.value
    addresses = {
        "weather": CscAddress("Weather", 0),
        "telescope": CscAddress("Telescope", index),
        "header": CscAddress("HeaderService", index),
        "archiver": CscAddress("Archiver", index),
        "camera": CscAddress("Camera", index),
    }
    overrides = {"telescope": "fast", "camera": "fast"} if fast else {}
    env = {"CSCS_STATE_DIR": str(state_dir)} if state_dir else {}
    log = NightLog(sensors_per_image=len(camera.detectors))
    failures = 0
    async with EmbeddedBroker(backend) as broker:
        print(f"broker: {broker.backend} at {broker.url}", file=out, flush=True)
        processes = [await _spawn(a, broker.url, env) for a in addresses.values()]
        try:
            async with Bus(broker.address) as bus, contextlib.AsyncExitStack() as stack:
                remotes = {
                    key: await stack.enter_async_context(Remote(bus, address))
                    for key, address in addresses.items()
                }
                for key, remote in remotes.items():
                    await remote.wait_for_state(State.STANDBY, timeout=60)
                    await remote.command("start", {"configurationOverride": overrides.get(key, "")})
                    await remote.command("enable")
                print(f"{', '.join(map(str, addresses.values()))} up, each in its own process",
                      file=out, flush=True)  # fmt: skip
                for key, topic in (("telescope", "dome"), ("weather", "weather")):
                    async with remotes[key].stream(topic, kind=Kind.TELEMETRY) as samples:
                        await samples.next(30)  # the header needs these flowing
                await _night(remotes, log, out)
                for remote in remotes.values():
                    await remote.command("disable")
                    await remote.command("standby")
                await show_status(bus, "obs", out=out, listen=1.5)
                for remote in remotes.values():
                    await remote.command("exitControl")
            for process in processes:
                async with asyncio.timeout(15):
                    failures += await process.wait() != 0
        finally:
            await _stop(processes)
    _summary(log, failures, out)
    ok = log.files == log.files_with_header == log.taken * log.sensors_per_image
    ok = ok and log.headers_complete == log.taken
    return 0 if not failures and not log.problems and ok else 1


async def _night(remotes: dict[str, Remote], log: NightLog, out: TextIO) -> None:
    camera, telescope = remotes["camera"], remotes["telescope"]
    async with (
        camera.stream("endReadout") as ends,
        remotes["archiver"].stream() as archived,
        remotes["header"].stream("largeFileObjectAvailable") as headers,
    ):
        checkers = [
            asyncio.create_task(_note_ends(ends, log)),
            asyncio.create_task(_verify_archive(archived, log, out)),
            asyncio.create_task(_check_headers(headers, log, out)),
        ]
        try:
            east, west = _targets()

            async def take(what: str, count: int, params: dict[str, Any]) -> None:
                print(f"{what}: {count} x {params['expTime']:g} s", file=out, flush=True)
                await camera.command("takeImages", {"numImages": count, **params}, timeout=60)
                log.taken += count

            await take("biases", 3, BIAS)
            await take("darks", 2, DARK)
            await telescope.command("setFilter", {"filter": "r"}, timeout=30)
            await take("flats in r", 2, FLAT)
            for target, band, count in ((east, "g", 2), (west, "r", 1)):
                await telescope.command("slew", target, timeout=60)
                await telescope.command("setFilter", {"filter": band}, timeout=30)
                async with telescope.stream("dome", kind=Kind.TELEMETRY) as dome:
                    await dome.next(10)  # the dome has caught up with the slew
                await take(f"science on {target['object']} in {band}", count, SCIENCE)
            async with asyncio.timeout(120), log.changed:  # the last files and headers
                await log.changed.wait_for(log.settled)
        finally:
            for task in checkers:
                task.cancel()
            for task in checkers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _summary(log: NightLog, failures: int, out: TextIO) -> None:
    latencies = sorted(log.latencies)
    median = latencies[len(latencies) // 2] * 1e3 if latencies else float("nan")
    worst = latencies[-1] * 1e3 if latencies else float("nan")
    print(
        f"summary: {log.taken} images taken; {log.files} of "
        f"{log.taken * log.sensors_per_image} files archived and verified (FITS checksums "
        f"re-read, MD5 matched; {log.bytes_archived / 1e9:.2f} GB); {log.files_with_header} "
        f"with their header, {log.headers_complete} of {log.headers} headers complete; "
        f"endReadout -> archived median {median:.0f} ms, worst {worst:.0f} ms; "
        f"{len(log.problems)} problems; every CSC exited "
        f"{'cleanly' if not failures else 'with problems'}",
        file=out,
    )
    for place in sorted(log.archive):
        print(f"archive and catalog: {place} (catalog.sqlite)", file=out)
    for problem in log.problems:
        print(f"  problem: {problem}", file=out)
