"""``cscs demo``: start the embedded broker and every CSC of one camera, each in its own
process (the same ``cscs run`` a user would type), and run the shipped observing
script (``sim/site/scripts/night.yaml``) as the OCS would: biases, darks, flats, then
science exposures on two fields with filter changes.

Every archived file is re-read while the night runs: its size and file checksum compared
with what the archiver announced in ``imageArchived`` (by the announced algorithm,
Adler-32 unless the archiver is configured for MD5), its FITS checksums verified; and
every header document is fetched and checked with the archiver's own check (its size and
MD5 against the header service's announcement, its schema, its image name)
(:mod:`sim.site.night`).
It ends with a status table and a summary; it exits 0 only if every file was archived,
verified and complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from cscs.archiver.interface import INTERFACE as ARCHIVER
from cscs.camera.events import END_READOUT
from cscs.camera.geometry import Camera
from cscs.camera.headers.announcement import LARGE_FILE_OBJECT_AVAILABLE
from cscs.camera.observatory import local_sidereal_deg
from cscs.core.broker import Backend, EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.protocol import AckCode
from cscs.core.remote import CommandTimeoutError, Remote
from cscs.core.settings import default_state_dir
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress, Kind
from cscs.ocs.progress import Progress
from cscs.ocs.runner import run_script
from cscs.ocs.script import Command, Script, ScriptStepError, expand, load_script
from cscs.ocs.status import show_status
from sim.site.daytime import daytime
from sim.site.night import (
    NightLog,
    NightStoppedError,
    check_headers,
    efd_summary,
    note_alarm,
    note_alarms,
    note_ends,
    note_in_oods,
    note_seeing,
    verify_archive,
)
from sim.site.processes import log_path, log_tail, spawn, stop

__all__ = ["NIGHT_SCRIPT", "images_commanded", "run_demo"]

NIGHT_SCRIPT = Path(__file__).parent / "scripts" / "night.yaml"
EFD_WRITER = CscAddress("EfdWriter", 0)
_SETTLE = 120.0  # s after the last step for the last files and headers


def images_commanded(script: Script, overrides: Mapping[str, Any]) -> int:
    """Images the script's ``takeImages`` commands ask for (those expected to succeed)."""
    return sum(
        int(b.step.params.get("numImages", 1))
        for b in expand(script, overrides)
        if isinstance(b.step, Command)
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
    dashboard: bool = False,
    watch_dashboard: Callable[[str], Coroutine[Any, Any, None]] | None = None,
) -> int:
    """Run the night; 0 only if every image was read back and verified, every header
    arrived complete and intact, and every CSC exited cleanly. On Ctrl-C every process
    is stopped (SIGTERM, then SIGKILL after 10 s) before the interruption goes on.

    ``dashboard``: serve the night staff's page (``cscs dashboard``) on a free port of
    127.0.0.1 while the night runs, and after it until Ctrl-C. ``watch_dashboard`` is
    given the page's address and runs beside the night (``make screenshot``)."""
    index = camera.value
    addresses = [
        EFD_WRITER,  # first up, last down: it records the whole night
        CscAddress("Weather", 0),
        CscAddress("Telescope", index),
        CscAddress("HeaderService", index),
        CscAddress("Archiver", index),
        CscAddress("OODS", index),
        CscAddress("OCSBatch", 0),
        CscAddress("TelemetryGateway", 0),
        CscAddress("Camera", index),
    ]
    script = load_script(script_path)
    night = f"demo-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    overrides = {"index": index, "config": "fast" if fast else "", "night": night}
    env = {"CSCS_STATE_DIR": str(state_dir)} if state_dir else {}
    progress = Progress(out)
    log = NightLog(sensors_per_image=len(camera.detectors))
    log.taken = images_commanded(script, overrides)
    failures = 0
    logs = (state_dir or default_state_dir()) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    async with EmbeddedBroker(backend) as broker:
        progress.say(
            f"broker: {broker.backend} at {broker.url}, without authentication "
            "(anyone on this host can publish; a site uses `cscs broker-config`)"
        )
        # The EFD writer is ENABLED from its start (as a supervisor starts it): it records
        # the night's commands from the first, into the EFD under the state directory.
        processes = [
            await spawn(a, broker.url, env, logs, "enabled" if a == EFD_WRITER else "standby")
            for a in addresses
        ]
        progress.say(f"{', '.join(map(str, addresses))}: each in its own process (cscs run)")
        progress.say(f"their logs: {logs}")
        try:
            async with Bus(broker.address) as bus, contextlib.AsyncExitStack() as page:
                if dashboard or watch_dashboard:
                    url = await page.enter_async_context(_dashboard(bus, state_dir))
                    progress.say(f"dashboard: {url}")
                    if watch_dashboard is not None:
                        watcher = asyncio.create_task(watch_dashboard(url), name="watch-page")
                        page.push_async_callback(_finish, watcher)
                progress.say(f"running {script.source} ({script.name}): {log.taken} images")
                gone: set[CscAddress] = set()
                try:
                    await _night(bus, script, overrides, camera, log, progress)
                    await daytime(bus, night, log, progress)
                    log.efd = await efd_summary(bus, EFD_WRITER)
                except ScriptStepError as exc:
                    log.problems.append(f"the night stopped: {exc}")
                    gone = _report_exited(addresses, processes, logs, log)
                except NightStoppedError:
                    gone = _report_exited(addresses, processes, logs, log)
                for address, why in await _shut_down(bus, addresses, progress, gone):
                    log.problems.append(
                        f"{why}; the end of its log:\n" + log_tail(log_path(logs, address))
                    )
                if dashboard:
                    _summary(log, failures, out)
                    progress.say(f"the dashboard stays up at {url} (Ctrl-C stops it)")
                    await asyncio.Event().wait()
            for process in processes:
                async with asyncio.timeout(15):
                    failures += await process.wait() != 0
        except asyncio.CancelledError:
            progress.done()
            print("interrupted: stopping every CSC", file=out, flush=True)
            raise
        finally:
            await stop(processes)
    _summary(log, failures, out)
    ok = log.files == log.files_with_header == log.taken * log.sensors_per_image
    ok = ok and log.headers_complete == log.headers == log.taken
    ok = ok and sum(n == log.sensors_per_image for n in log.in_oods.values()) == log.taken
    return 0 if not failures and not log.problems and ok else 1


def _dashboard(bus: Bus, state_dir: Path | None) -> contextlib.AbstractAsyncContextManager[str]:
    from cscs.core.settings import settings_from_env
    from cscs.dashboard.run import dashboard_options, running_dashboard

    settings = settings_from_env()
    if state_dir is not None:
        settings = dataclasses.replace(settings, state_dir=state_dir)
    return running_dashboard(bus, dashboard_options(settings, allow_commands=True))


async def _finish(task: asyncio.Task[None]) -> None:
    """The page's watcher has had the night; its failure is the night's problem."""
    await task


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
        Remote(bus, CscAddress(ARCHIVER.name, index)) as archiver,
        Remote(bus, CscAddress("HeaderService", index)) as header,
        cam.events(END_READOUT) as ends,
        Remote(bus, CscAddress("Weather", 0)) as weather,
        weather.stream("weather", kind=Kind.TELEMETRY) as seeing,
        archiver.stream() as archived,
        header.events(LARGE_FILE_OBJECT_AVAILABLE) as headers,
        Remote(bus, CscAddress("TelemetryGateway", 0)) as gateway,
        gateway.stream("alarm") as alarms,
        Remote(bus, CscAddress("OODS", index)) as oods,
        oods.stream("imageInOODS") as in_oods,
    ):
        checkers = [
            asyncio.create_task(note_ends(ends, log)),
            asyncio.create_task(note_seeing(seeing, log)),
            asyncio.create_task(verify_archive(archived, log, progress)),
            asyncio.create_task(check_headers(headers, log, progress)),
            asyncio.create_task(note_alarms(alarms, log, progress)),
            asyncio.create_task(note_in_oods(in_oods, log, progress)),
        ]
        try:
            await run_script(
                bus, script, overrides=overrides, progress=progress,
                lst_deg=lambda: local_sidereal_deg(current_tai()),
            )  # fmt: skip
            progress.say("waiting for the last files, headers and images in the OODS")
            try:
                async with asyncio.timeout(_SETTLE), log.changed:
                    await log.changed.wait_for(log.settled)
            except TimeoutError:
                log.problems.append(
                    f"waited {_SETTLE:g} s after the last step for the last files and headers: "
                    f"{log.files} of {log.taken * log.sensors_per_image} files, "
                    f"{log.headers} of {log.taken} headers came, "
                    f"{len(log.in_oods)} of {log.taken} images in the OODS"
                )
                raise NightStoppedError from None
        finally:
            progress.done()
            await cancel_and_wait(checkers, structlog.get_logger("demo"), "stopping the checks")
            for change in alarms.pending():  # came as the night ended: still the night's
                note_alarm(change, log, progress)


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
                + log_tail(log_path(logs, address))
            )
    return exited


def _summary(log: NightLog, failures: int, out: TextIO) -> None:
    latencies = sorted(log.latencies)
    median = latencies[len(latencies) // 2] * 1e3 if latencies else float("nan")
    worst = latencies[-1] * 1e3 if latencies else float("nan")
    expected = log.taken * log.sensors_per_image
    oods = sorted(log.oods_latencies)
    in_oods = sum(n == log.sensors_per_image for n in log.in_oods.values())
    print(
        f"summary: {len(log.ended)} of {log.taken} images taken; {log.files} of {expected} "
        f"files archived and verified (FITS checksums re-read, file checksums matched; "
        f"{log.bytes_archived / 1e9:.2f} GB); {log.files_with_header} with their header, "
        f"{log.headers_complete} of {log.headers} headers complete; endReadout -> archived "
        f"median {median:.0f} ms, worst {worst:.0f} ms; {in_oods} of {log.taken} images in "
        f"the OODS (Butler repository and ConsDB), endReadout -> imageInOODS median "
        f"{oods[len(oods) // 2] * 1e3 if oods else float('nan'):.0f} ms; "
        f"{len(log.problems)} problems; "
        f"every CSC exited {'cleanly' if not failures else 'with problems'}",
        file=out,
    )
    for place in sorted(log.archive):
        print(f"archive and catalog: {place} (catalog.sqlite)", file=out)
    if log.efd:
        print(f"EFD: {log.efd}", file=out)
    for problem in log.problems:
        print(f"  problem: {problem}", file=out)
