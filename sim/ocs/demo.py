"""``cscs demo``: start the embedded broker and every CSC that exists, each in its own
process (the same ``cscs run`` a user would type), and run the shipped observing
script (``sim/ocs/scripts/night.yaml``) as the OCS would: biases, darks, flats, then
science exposures on two fields with filter changes.

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

import structlog
from astropy.io import fits

from cscs.core.broker import Backend, EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.geometry import Camera
from cscs.core.observatory import local_sidereal_deg
from cscs.core.protocol import AckCode
from cscs.core.remote import CommandTimeoutError, EventStream, Remote
from cscs.core.settings import default_state_dir
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress
from sim.ocs.operator import show_status
from sim.ocs.script import (
    NIGHT_SCRIPT,
    Progress,
    Script,
    ScriptStepError,
    expand,
    load_script,
    run_script,
)
from sim.ocs.script import Command as ScriptCommand

__all__ = ["images_commanded", "run_demo", "verify_archived_file"]


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
    # QoS 1 is at-least-once, and overlapping subscriptions on one connection can
    # bring a message twice: each file and header is counted once
    seen: set[tuple[str, str]] = field(default_factory=set)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def note(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def settled(self) -> bool:
        """Every file of every image taken is checked, and every header has come."""
        expected = self.taken * self.sensors_per_image
        return self.files + len(self.problems) >= expected and self.headers >= self.taken


class NightStoppedError(Exception):
    """The night could not go on; why is in the log's problems."""


async def _spawn(
    address: CscAddress, broker_url: str, env: Mapping[str, str], logs: Path
) -> asyncio.subprocess.Process:
    """Start ``cscs run`` for one CSC, its log (stdout and stderr) to ``logs``."""
    log = await asyncio.to_thread(open, _log_path(logs, address), "ab")
    with log:  # the child has its own descriptor once started
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cscs", "run", address.name, "--index", str(address.index),
            "--broker", broker_url,
            stdout=log, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **env},
        )  # fmt: skip


def _log_path(logs: Path, address: CscAddress) -> Path:
    return logs / f"{address.name}-{address.index}.log"


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"    (no log: {exc.strerror})"
    return "\n".join(f"    {line}" for line in text) or "    (empty log)"


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


async def _note_ends(events: EventStream, log: NightLog) -> None:
    async for event in events:
        log.ended[event.data["imageName"]] = time.perf_counter()


def verify_archived_file(event: dict[str, Any]) -> str:
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


async def _verify_archive(events: EventStream, log: NightLog, progress: Progress) -> None:
    """Each imageArchived: re-read the file and check it."""
    async for event in events:
        if event.name not in ("imageArchived", "imageRetrievalFailed"):
            continue
        data = event.data
        image = data["imageName"]
        if (event.name, f"{image} {data['sensor']}") in log.seen:
            continue
        log.seen.add((event.name, f"{image} {data['sensor']}"))
        if event.name == "imageRetrievalFailed":
            log.problems.append(f"{image} {data['sensor']}: {data['description']}")
            await log.note()
            continue
        problem = await asyncio.to_thread(verify_archived_file, data)
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
            progress.say(
                f"  {image}: {log.sensors_per_image} file(s) archived, re-read and verified "
                f"{latency * 1e3:.0f} ms after endReadout"
            )
        await log.note()


async def _check_headers(events: EventStream, log: NightLog, progress: Progress) -> None:
    """Fetch each announced header document and check its size and MD5."""
    async for event in events:
        data = event.data
        if (event.name, data["id"]) in log.seen:
            continue
        log.seen.add((event.name, data["id"]))
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
            progress.say(f"  {data['id']}: header lacks {missing}")
        await log.note()


def images_commanded(script: Script, overrides: Mapping[str, Any]) -> int:
    """Images the script's ``takeImages`` commands ask for (those expected to succeed)."""
    return sum(
        int(b.step.params.get("numImages", 1))
        for b in expand(script, overrides)
        if isinstance(b.step, ScriptCommand)
        and b.step.name == "takeImages"
        and b.step.expect is AckCode.COMPLETE
    )


async def run_demo(
    backend: Backend = "auto",
    camera: Camera = Camera.LATISS,
    fast: bool = False,
    state_dir: Path | None = None,
    out: TextIO = sys.stdout,
    script_path: Path = NIGHT_SCRIPT,
) -> int:
    """Run the night; 0 only if every image was read back and verified, every header
    arrived complete and intact, and every CSC exited cleanly. On Ctrl-C every process
    is stopped (SIGTERM, then SIGKILL after 10 s) before the interruption goes on."""
    index = camera.value
    addresses = [
        CscAddress("Weather", 0),
        CscAddress("Telescope", index),
        CscAddress("HeaderService", index),
        CscAddress("Archiver", index),
        CscAddress("Camera", index),
    ]
    script = load_script(script_path)
    overrides = {"index": index, "config": "fast" if fast else ""}
    env = {"CSCS_STATE_DIR": str(state_dir)} if state_dir else {}
    progress = Progress(out)
    log = NightLog(sensors_per_image=len(camera.detectors))
    log.taken = images_commanded(script, overrides)
    failures = 0
    logs = (state_dir or default_state_dir()) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    async with EmbeddedBroker(backend) as broker:
        progress.say(f"broker: {broker.backend} at {broker.url}")
        processes = [await _spawn(a, broker.url, env, logs) for a in addresses]
        progress.say(f"{', '.join(map(str, addresses))}: each in its own process (cscs run)")
        progress.say(f"their logs: {logs}")
        try:
            async with Bus(broker.address) as bus:
                progress.say(f"running {script.source} ({script.name}): {log.taken} images")
                gone: set[CscAddress] = set()
                try:
                    await _night(bus, script, overrides, camera, log, progress)
                except ScriptStepError as exc:
                    log.problems.append(f"the night stopped: {exc}")
                    gone = _report_exited(addresses, processes, logs, log)
                except NightStoppedError:
                    gone = _report_exited(addresses, processes, logs, log)
                for address, why in await _shut_down(bus, addresses, progress, gone):
                    log.problems.append(
                        f"{why}; the end of its log:\n" + _log_tail(_log_path(logs, address))
                    )
            for process in processes:
                async with asyncio.timeout(15):
                    failures += await process.wait() != 0
        except asyncio.CancelledError:
            progress.done()
            print("interrupted: stopping every CSC", file=out, flush=True)
            raise
        finally:
            await _stop(processes)
    _summary(log, failures, out)
    ok = log.files == log.files_with_header == log.taken * log.sensors_per_image
    ok = ok and log.headers_complete == log.headers == log.taken
    return 0 if not failures and not log.problems and ok else 1


async def _night(
    bus: Bus,
    script: Script,
    overrides: Mapping[str, Any],
    camera: Camera,
    log: NightLog,
    progress: Progress,
) -> None:
    """Run the script while checking every file and header as they are announced."""
    index = camera.value
    async with (
        Remote(bus, CscAddress("Camera", index)) as cam,
        Remote(bus, CscAddress("Archiver", index)) as archiver,
        Remote(bus, CscAddress("HeaderService", index)) as header,
        cam.stream("endReadout") as ends,
        archiver.stream() as archived,
        header.stream("largeFileObjectAvailable") as headers,
    ):
        checkers = [
            asyncio.create_task(_note_ends(ends, log)),
            asyncio.create_task(_verify_archive(archived, log, progress)),
            asyncio.create_task(_check_headers(headers, log, progress)),
        ]
        try:
            await run_script(
                bus, script, overrides=overrides, progress=progress,
                lst_deg=lambda: local_sidereal_deg(current_tai()),
            )  # fmt: skip
            progress.say("waiting for the last files and headers")
            try:
                async with asyncio.timeout(120), log.changed:
                    await log.changed.wait_for(log.settled)
            except TimeoutError:
                log.problems.append(
                    f"waited 120 s after the last step for the last files and headers: "
                    f"{log.files} of {log.taken * log.sensors_per_image} files, "
                    f"{log.headers} of {log.taken} headers came"
                )
                raise NightStoppedError from None
        finally:
            await cancel_and_wait(checkers, structlog.get_logger("demo"), "stopping the checks")


async def _shut_down(
    bus: Bus, addresses: list[CscAddress], progress: Progress, gone: set[CscAddress]
) -> list[tuple[CscAddress, str]]:
    """Every CSC back to STANDBY, the status table, then exitControl (processes end).

    CSCs in ``gone`` (their process ended) are not asked; one that does not answer is
    asked nothing more, so the others still stop cleanly. What is returned names the
    command each silent CSC left unanswered."""
    silent: list[tuple[CscAddress, str]] = []
    async with contextlib.AsyncExitStack() as stack:
        remotes = [await stack.enter_async_context(Remote(bus, a)) for a in addresses]

        async def send(remote: Remote, command: str) -> None:
            if remote.address in gone:
                return
            try:
                await remote.command(command, check=False, timeout=30)
            except CommandTimeoutError as exc:
                gone.add(remote.address)
                silent.append((remote.address, f"shutting down: {exc}"))

        for remote in reversed(remotes):  # the camera first, the weather last
            for command in ("disable", "standby"):
                await send(remote, command)
        await show_status(bus, "obs", out=progress.out, listen=1.5)
        for remote in remotes:
            await send(remote, "exitControl")
    return silent


def _report_exited(
    addresses: list[CscAddress],
    processes: list[asyncio.subprocess.Process],
    logs: Path,
    log: NightLog,
) -> set[CscAddress]:
    """CSCs that stopped answering because their process ended: each reported with its
    exit code and the end of its log."""
    exited = set()
    for address, process in zip(addresses, processes, strict=True):
        if process.returncode is not None:
            exited.add(address)
            log.problems.append(
                f"{address}'s process ended with exit code {process.returncode}; its log ends:\n"
                + _log_tail(_log_path(logs, address))
            )
    return exited


def _summary(log: NightLog, failures: int, out: TextIO) -> None:
    latencies = sorted(log.latencies)
    median = latencies[len(latencies) // 2] * 1e3 if latencies else float("nan")
    worst = latencies[-1] * 1e3 if latencies else float("nan")
    expected = log.taken * log.sensors_per_image
    print(
        f"summary: {len(log.ended)} of {log.taken} images taken; {log.files} of {expected} "
        f"files archived and verified (FITS checksums re-read, MD5 matched; "
        f"{log.bytes_archived / 1e9:.2f} GB); {log.files_with_header} with their header, "
        f"{log.headers_complete} of {log.headers} headers complete; endReadout -> archived "
        f"median {median:.0f} ms, worst {worst:.0f} ms; {len(log.problems)} problems; "
        f"every CSC exited {'cleanly' if not failures else 'with problems'}",
        file=out,
    )
    for place in sorted(log.archive):
        print(f"archive and catalog: {place} (catalog.sqlite)", file=out)
    for problem in log.problems:
        print(f"  problem: {problem}", file=out)
