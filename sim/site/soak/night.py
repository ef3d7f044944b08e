"""``cscs soak``: a long night of LATISS and ComCam images with faults injected, and its
reconciliation from the cameras' own records.

Both cameras take images at once, each in its own loop; before some images a fault of
the plan (:mod:`sim.site.soak.plan`) is done to the site (:mod:`sim.site.soak.faults`). The soak
listens as any client of the broker would (:mod:`sim.site.soak.record`): each file is re-read
and verified as it is announced, then pruned when nothing needs it any more, so a night
of ~100 GB fits on a disk with much less free. At the end it waits for the archive to
settle, checks the catalog against the cameras' journals, and prints and writes the
account (:mod:`sim.site.soak.reconcile`). Exit status 0 only when nothing was lost or
duplicated and every shortfall is explained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import structlog

from cscs.camera.geometry import Camera
from cscs.camera.observatory import local_sidereal_deg
from cscs.core.bus import Bus
from cscs.core.remote import AckError, CommandTimeoutError, Remote
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import DEFAULT_PREFIX, CscAddress, Kind
from sim.daq.journal import journal_path, read_journal
from sim.site.influxd import InfluxServer, find_influxd
from sim.site.soak.account import account
from sim.site.soak.faults import Injector
from sim.site.soak.plan import FaultPlan, plan_faults
from sim.site.soak.reconcile import QC_TYPES
from sim.site.soak.record import NightRecord, recover
from sim.site.soak.site import CAMERAS, SoakSite, addresses, soak_site

__all__ = ["SoakOptions", "run_soak"]

_log = structlog.get_logger("soak")
#: Images of a camera taken and not yet archived before the next waits: the simulated
#: DAQ buffer is RAM (6 GiB: ~80 LATISS or ~9 ComCam images), not the hours a real one
#: holds, so the night is paced by it rather than overrun.
_BACKLOG = {Camera.LATISS: 12, Camera.COMCAM: 2}
_SETTLE = 600.0  # s at most for the archive to settle after the last image
_QC_ENDS = ("measured", "failed")  # image-qc stages that end an image's QC
#: s without a file or a QC stage: nothing more is coming (QC is caught up every 15 s,
#: a header rebuilt by a restarted header service and completed by the archiver's
#: catch-up every 10 s)
_QUIET = 60.0


@dataclass(frozen=True)
class SoakOptions:
    state_dir: Path
    latiss: int = 500
    comcam: int = 100
    seed: int = 1
    spacing: int = 10  # images between faults
    headroom: int = 20 * 2**30  # bytes the archive may use before its reserve is reached
    json_path: Path | None = None
    keep_files: bool = False
    efd: str = "sqlite"  # the EFD's store: "sqlite" (embedded) or "influxdb" (started here)

    def images(self) -> dict[Camera, int]:
        return {Camera.LATISS: self.latiss, Camera.COMCAM: self.comcam}


async def run_soak(options: SoakOptions, out: TextIO = sys.stdout) -> int:
    state = options.state_dir
    influxd = find_influxd() if options.efd == "influxdb" else None
    if options.efd == "influxdb" and influxd is None:
        print("soak: --efd influxdb needs influxd, which is not installed here (Debian's "
              "influxdb package: apt-get install influxdb); run without it for the "
              "embedded store", file=out)  # fmt: skip
        return 2
    if state.exists() and any(state.iterdir()):
        print(f"soak: {state} is not empty: a night starts from nothing (its journals, "
              "catalog and configuration would be the last night's); remove it or give "
              "another --state-dir", file=out)  # fmt: skip
        return 2
    state.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(state).free
    need = options.headroom + 4 * 2**30  # a full archive still leaves the machine 3 GiB
    if free < need:
        print(f"soak: needs {need / 1e9:.1f} GB free on the file system of {state} (the "
              f"archive's working set and the archivers' reserve); it has {free / 1e9:.1f} GB",
              file=out)  # fmt: skip
        return 2
    min_free = free - options.headroom
    plan = plan_faults(options.seed, options.images(), options.spacing, influxd is not None)
    print(f"soak: seed {options.seed}; {options.latiss} LATISS + {options.comcam} ComCam "
          f"images; {len(plan.faults)} faults of {len(plan.kinds())} kinds; state {state}; "
          f"archivers keep {min_free / 1e9:.1f} GB free; EFD on {options.efd}",
          file=out, flush=True)  # fmt: skip
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:  # undone last-first, interrupted too
        influx = None
        if influxd is not None:  # the site's processes stop first, the EFD's store last
            influx = InfluxServer(influxd, state / "influxdb")
            stack.push_async_callback(asyncio.to_thread, influx.stop)
            await asyncio.to_thread(influx.start)
        site = await stack.enter_async_context(soak_site(state, min_free, influx))
        result = await _night(site, plan, options, min_free, out)
    result["efd"] = options.efd
    result["durationSeconds"] = round(time.monotonic() - started, 1)
    path = options.json_path or state / f"soak-{options.seed}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"duration {result['durationSeconds']:.0f} s; written to {path}", file=out)
    return 0 if result["ok"] else 1


async def _night(
    site: SoakSite, plan: FaultPlan, options: SoakOptions, min_free: int, out: TextIO
) -> dict[str, Any]:
    client = f"soak-{uuid.uuid4().hex[:8]}"
    async with Bus(site.broker.address, client_id=client, persistent_session=True,
                   connect_timeout=30) as bus:  # fmt: skip
        record = NightRecord(DEFAULT_PREFIX, prune=not options.keep_files)
        recoveries: list[asyncio.Task[None]] = []

        def start_recovery(address: CscAddress, fault: dict[str, object]) -> None:
            recoveries.append(asyncio.create_task(recover(bus, address, record, fault)))

        await record.start(bus, start_recovery)
        injector = Injector(site, bus, record, min_free)
        try:
            everyone = [str(a) for a in addresses()]
            up = await record.wait(
                lambda: all(record.states.get(a) is State.ENABLED for a in everyone), 180
            )
            if not up:
                raise RuntimeError(f"not every CSC came up ENABLED: {record.states}; "
                                   + "; ".join(site.exited()))  # fmt: skip
            for camera in CAMERAS:
                await _point(bus, camera)
            print("every CSC ENABLED, each in its own process; the telescopes on their "
                  "fields; the night begins", file=out)  # fmt: skip
            rng = random.Random(plan.seed)
            names: dict[Camera, list[str]] = {}
            async with asyncio.TaskGroup() as night:  # one camera's failure ends the other's
                for camera, count in options.images().items():
                    names[camera] = []
                    seed = rng.randrange(2**32)
                    night.create_task(_camera_night(
                        camera, count, plan, injector, record, bus, site.state,
                        random.Random(seed), names[camera], out,
                    ))  # fmt: skip
            await injector.finish()
            await _settle(bus, record, site.state, out)
            taken = {camera.instrument: len(n) for camera, n in names.items()}
            result = await account(site.state, plan, record, injector.windows, taken, out)
            result["exited"] = site.exited()
            result["ok"] = result["ok"] and not result["exited"]
            if not options.keep_files:
                await record.prune_all()
            result["prunedBytes"] = record.pruned_bytes
            return result
        finally:
            await injector.close()
            await cancel_and_wait(recoveries, _log, "stopping recoveries")
            await record.stop()


async def _camera_night(
    camera: Camera,
    count: int,
    plan: FaultPlan,
    injector: Injector,
    record: NightRecord,
    bus: Bus,
    state: Path,
    rng: random.Random,
    names: list[str],
    out: TextIO,
) -> None:
    """Take ``count`` images, their names added to ``names`` as they are taken."""
    sensors = [d.name for d in camera.detectors]
    journal = journal_path(state, camera.value)

    def behind() -> int:
        return sum(record.archived.get(name, 0) < len(sensors) for name in names[-50:])

    async with Remote(bus, CscAddress("Camera", camera.value)) as remote:
        for number in range(1, count + 1):
            await record.wait(lambda: behind() <= _BACKLOG[camera], 600, f"{camera.name} backlog")
            fault = plan.at(camera, number)
            if fault is not None:
                await injector.before(fault, sensors)
            science = rng.random() < 0.75
            params = {"numImages": 1, "expTime": 1.0 if science else 0.0, "shutter": science,
                      "imageType": "OBJECT" if science else "BIAS"}  # fmt: skip
            names.append(await _take(remote, journal, params))
            if fault is not None:
                await injector.after(fault, names[-1], len(sensors))
            if number % 25 == 0 or number == count:
                print(f"  {camera.instrument}: {number} of {count} taken "
                      f"({time.strftime('%H:%M:%S')})", file=out, flush=True)  # fmt: skip


async def _point(bus: Bus, camera: Camera) -> None:
    """The camera's telescope on a field on the meridian, in r, its dome caught up: as
    a night's script starts (the first headers would lack the pointing otherwise)."""
    async with (
        Remote(bus, CscAddress("Telescope", camera.value)) as telescope,
        telescope.stream("dome", kind=Kind.TELEMETRY) as dome,
    ):
        field = {"ra": local_sidereal_deg(current_tai()) % 360.0, "dec": -30.0,
                 "object": f"soak-{camera.name.lower()}", "program": "SOAK"}  # fmt: skip
        await telescope.command("slew", field, timeout=120)
        await telescope.command("setFilter", {"filter": "r"}, timeout=120)
        await dome.next(60)


async def _take(remote: Remote, journal: Path, params: dict[str, Any]) -> str:
    """One image; its name from the ack or, when the ack was lost with the broker, from
    the camera's journal."""
    before = len(await asyncio.to_thread(read_journal, journal))

    async def journal_grew() -> str | None:
        for _ in range(120):
            images = await asyncio.to_thread(read_journal, journal)
            if len(images) > before:
                return images[-1].imageName
            await asyncio.sleep(0.5)
        return None

    for _ in range(3):
        try:
            ack = await remote.command("takeImages", params, timeout=60)
            return ack.result.split()[-1]
        except (CommandTimeoutError, AckError) as exc:
            _log.warning("takeImages unanswered or refused; looking at the journal", error=str(exc))
            name = await journal_grew()
            if name is not None:
                return name
    raise RuntimeError(f"{remote.address} took no image after 3 takeImages")


async def _settle(bus: Bus, record: NightRecord, state: Path, out: TextIO) -> None:
    """Until every sensor each camera took is verified, with its header (rebuilt, for
    those a header service missed), every image QC applies to is measured or failed
    (caught up, for those OCS Batch missed), and what was measured is forwarded; each
    within ``_SETTLE`` s, and a wait ends early once nothing has come for ``_QUIET`` s
    (what is missing then is not coming)."""
    taken = [image for c in CAMERAS for image in read_journal(journal_path(state, c.value))]
    expected = {(i.imageName, s) for i in taken for s in i.sensors if s not in i.missing}
    science = {i.imageName for i in taken if i.imageType in QC_TYPES}
    print(f"settling: {len(expected)} files expected", file=out, flush=True)
    for camera in CAMERAS:
        async with Remote(bus, CscAddress("Archiver", camera.value)) as archiver:
            await archiver.command("catchUp", timeout=_SETTLE, check=False)
    await record.wait(lambda: expected <= record.verified.keys(), _SETTLE, "every file")

    def quiet() -> bool:
        return time.monotonic() - max(record.last_stage, record.last_archived) > _QUIET

    def headers() -> bool:
        verified = record.verified
        return all(verified[k].header_complete for k in expected if k in verified) or quiet()

    def measured() -> bool:
        ended = {i for i, (status, _) in record.stages.items() if status in _QC_ENDS}
        return science <= ended or quiet()

    await record.wait(headers, _SETTLE, "headers (rebuilt)")
    await record.wait(measured, _SETTLE, "QC (caught up)")
    await record.wait(lambda: _measured_forwarded(record), 60.0, "QC forwarded")


def _measured_forwarded(record: NightRecord) -> bool:
    measured = {image for image, (status, _) in record.stages.items() if status == "measured"}
    return measured <= record.forwarded
