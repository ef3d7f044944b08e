"""How each planned fault is done to the running site, and when it is over.

A fault starts just before its image is taken (:meth:`Injector.before`); the camera's
loop then takes the image and calls :meth:`Injector.after`, which waits, where the fault
needs it, for the image to have gone through (the archiver gave up on the header, went
to FAULT at the full disk). Kills, the broker's restart and the link's cut run beside
the night, so that they land in the middle of work (as does InfluxDB's restart, when
it is the EFD's store). Each fault ends as a
:class:`~sim.site.soak.reconcile.FaultWindow`: what it hit, from when until it was back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import time

import structlog

from cscs.camera.naming import ImageName
from cscs.core.bus import Bus
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress
from sim.daq.journal import journal_path, read_journal
from sim.site.soak.plan import FaultKind, PlannedFault
from sim.site.soak.reconcile import FaultWindow
from sim.site.soak.record import NightRecord
from sim.site.soak.site import GATEWAY, SoakSite

__all__ = ["Injector"]

_log = structlog.get_logger("soak")
_BACK_WITHIN = 120.0  # s for a restarted CSC (or the broker's clients) to be back
_KILLED = {
    FaultKind.KILL_ARCHIVER: "Archiver",
    FaultKind.KILL_HEADER_SERVICE: "HeaderService",
    FaultKind.KILL_OCS_BATCH: "OCSBatch",
    FaultKind.KILL_GATEWAY: "TelemetryGateway",
    FaultKind.KILL_EFD: "EfdWriter",
}
#: The site's single CSCs (the others are each camera's).
_SITE_WIDE = ("OCSBatch", "TelemetryGateway", "EfdWriter")
_EFD_WHOLE_AGAIN = 5.0  # s after the EFD writer is back: the header service's max_age
#: Faults that run beside the night, ending by themselves.
_BESIDE = frozenset(_KILLED) | {
    FaultKind.BROKER_RESTART,
    FaultKind.OCS_LINK_CUT,
    FaultKind.INFLUX_RESTART,
}


class Injector:
    def __init__(self, site: SoakSite, bus: Bus, record: NightRecord, min_free_bytes: int):
        self.site, self.bus, self.record = site, bus, record
        self.min_free_bytes = min_free_bytes
        self.windows: list[FaultWindow] = []
        self._background: list[asyncio.Task[None]] = []
        self._ballast = site.archive / ".soak-ballast"
        self._pending: dict[PlannedFault, tuple[float, str]] = {}  # started: when, what
        self._one_at_a_time = asyncio.Lock()
        self._frozen: set[CscAddress] = set()

    async def before(self, fault: PlannedFault, sensors: list[str]) -> None:
        """Do what must be in place before the image is taken; start what runs beside.

        One fault at a time, whichever camera's image it comes before: the next waits
        until the last is over (two kills of one CSC, or two full disks, at once would
        undo each other, and the account could not tell them apart)."""
        await self._one_at_a_time.acquire()
        try:
            await self._before(fault, sensors)
        except BaseException:
            self._one_at_a_time.release()
            raise

    async def _before(self, fault: PlannedFault, sensors: list[str]) -> None:
        rng = random.Random(fault.seed)
        index = fault.camera.value
        kind = fault.kind
        _log.info("injecting", fault=kind.value, camera=fault.camera.name, image=fault.image)
        if kind in (FaultKind.DAQ_DROP, FaultKind.DAQ_CORRUPT):
            sensor = rng.choice(sensors)
            self._pending[fault] = (current_tai(), f"Camera:{index} DAQ stream of {sensor}")
            taken = await asyncio.to_thread(read_journal, journal_path(self.site.state, index))
            image = f"*_{ImageName.parse(taken[-1].imageName).seq_num + 1:06d}" if taken else "*"
            async with Remote(self.bus, CscAddress("Camera", index)) as camera:
                params = {"kind": kind.value.removeprefix("daq-"), "image": image,
                          "sensor": sensor, "count": 1}  # fmt: skip
                await camera.command("injectFault", params, timeout=30)
        elif kind is FaultKind.HEADER_NEVER:
            self._pending[fault] = (current_tai(), f"HeaderService:{index}")
            self.site.freeze(CscAddress("HeaderService", index), True)
            self._frozen.add(CscAddress("HeaderService", index))
        elif kind is FaultKind.DISK_FULL:
            self.record.disk_held.set()  # first: the soak stops pruning
            await asyncio.to_thread(self._fill)
            self._pending[fault] = (current_tai(), "archive disk")
        else:
            self._background.append(asyncio.create_task(self._beside_then_release(fault, rng)))

    async def after(self, fault: PlannedFault, image: str, sensors: int) -> None:
        """Wait for the image to have met the fault, then undo it (a fault running beside
        the night ends by itself)."""
        if fault.kind not in _BESIDE:
            try:
                await self._after(fault, image, sensors)
            finally:
                self._one_at_a_time.release()

    async def _after(self, fault: PlannedFault, image: str, sensors: int) -> None:
        kind, index = fault.kind, fault.camera.value
        if kind in (FaultKind.DAQ_DROP, FaultKind.DAQ_CORRUPT):
            ok = await self._archived(image, sensors, 120)
            self._end(fault, ok, f"{image} archived: {ok}")
        elif kind is FaultKind.HEADER_NEVER:
            ok = await self._archived(image, sensors, 120)  # without its header
            address = CscAddress("HeaderService", index)
            await self.site.kill(address)  # the hung process, as its supervisor would
            self._frozen.discard(address)
            await self.site.spawn(address)
            back = await self._back(address, time.monotonic())
            self._end(fault, ok and back, f"{image} archived: {ok}; restarted: {back}")
        elif kind is FaultKind.DISK_FULL:
            faulted = await self.record.wait(
                lambda: self.record.states.get(f"Archiver:{index}") is State.FAULT,
                120,
                f"Archiver:{index} to refuse the full disk",
            )
            await asyncio.to_thread(self._ballast.unlink, missing_ok=True)
            self.record.disk_held.clear()
            async with self.record.changed:
                self.record.changed.notify_all()
            back = await self.record.wait(self._archivers_enabled, 300, "archivers ENABLED")
            self._end(
                fault,
                faulted and back,
                f"Archiver:{index} went to FAULT: {faulted}; recovered: {back}",
            )

    async def finish(self) -> None:
        """Wait for the faults still running beside the night."""
        await asyncio.gather(*self._background)

    async def close(self) -> None:
        """Whatever happened (an interruption too): nothing of a fault left behind: its
        tasks stopped, the ballast removed, a frozen process thawed."""
        await cancel_and_wait(self._background, _log, "stopping the faults")
        self._ballast.unlink(missing_ok=True)
        self.record.disk_held.clear()
        for address in self._frozen:
            with contextlib.suppress(ProcessLookupError, KeyError):
                self.site.freeze(address, False)

    async def _beside_then_release(self, fault: PlannedFault, rng: random.Random) -> None:
        try:
            await self._beside(fault, rng)
        finally:
            self._one_at_a_time.release()

    # ---- what each does ----------------------------------------------------------------

    async def _beside(self, fault: PlannedFault, rng: random.Random) -> None:
        kind, index = fault.kind, fault.camera.value
        await asyncio.sleep(rng.uniform(0.0, 2.0))  # into the image's exposure or archiving
        start, down = current_tai(), rng.uniform(1.0, 6.0)
        if kind in _KILLED:
            name = _KILLED[kind]
            address = CscAddress(name, 0 if name in _SITE_WIDE else index)
            await self.site.kill(address)
            await asyncio.sleep(down)
            await self.site.spawn(address)
            back = await self._back(address, time.monotonic())
            if kind is FaultKind.KILL_EFD:
                # The EFD holds every telemetry topic's value in force again only once
                # each has been heard since the writer came back (max_age: 5 s): until
                # then a header rebuilt from it would miss what no one recorded.
                await asyncio.sleep(_EFD_WHOLE_AGAIN)
            self._window(kind, str(address), index, start, back, f"back: {back}")
        elif kind is FaultKind.BROKER_RESTART:
            await self.site.broker.stop()
            await asyncio.sleep(down)
            await self.site.broker.start()
            restarted = time.monotonic()
            beating = [await self._back(a, restarted) for a in self.site.processes]
            self._window(
                kind,
                "broker",
                index,
                start,
                all(beating),
                f"{sum(beating)} of {len(beating)} CSCs back",
            )
        elif kind is FaultKind.OCS_LINK_CUT:
            await self.site.link.cut()
            await asyncio.sleep(down + 4.0)
            await self.site.link.restore()
            back = await self._back(GATEWAY, time.monotonic())
            self._window(kind, "TelemetryGateway:0 OCS link", index, start, back, f"back: {back}")
        elif kind is FaultKind.INFLUX_RESTART:
            ok, note = await self.restart_influx(down)
            self._window(kind, "InfluxDB", index, start, ok, note)

    async def restart_influx(self, down: float) -> tuple[bool, str]:
        """influxd stopped, ``down`` s, started; over once it answers ``/ping`` and the
        EFD writer has since said its store is up with nothing left spooled (what it heard
        meanwhile is in InfluxDB: the restart cost nothing)."""
        influx = self.site.influx
        if influx is None:
            return False, "no InfluxDB in this soak (planned without --efd influxdb?)"
        await asyncio.to_thread(influx.stop)
        await asyncio.sleep(down)
        try:
            await asyncio.to_thread(influx.start)  # returns once it answers /ping
        except RuntimeError as exc:
            return False, f"influxd did not come back: {exc}"
        answered = time.monotonic()
        drained = await self.record.wait(
            lambda: self.record.efd_drained_since(answered),
            _BACK_WITHIN,
            "the EFD writer's store up and its spool empty",
        )
        status = self.record.efd_status
        spooled = status.spooled if status is not None else 0
        return drained, f"writer's store up, spool empty: {drained} ({spooled} spooled so far)"

    async def _back(self, address: CscAddress, since: float) -> bool:
        """Whether the CSC is ENABLED again (its process restarted, or reconnected)."""
        return await self.record.wait(
            lambda: self.record.enabled_since(str(address), since),
            _BACK_WITHIN,
            f"{address} ENABLED again",
        )

    async def _archived(self, image: str, sensors: int, timeout: float) -> bool:
        return await self.record.wait(
            lambda: self.record.archived.get(image, 0) >= sensors, timeout, f"{image} archived"
        )

    def _archivers_enabled(self) -> bool:
        states = self.record.states
        return all(s is State.ENABLED for a, s in states.items() if a.startswith("Archiver:"))

    def _fill(self) -> None:
        """A file that leaves the archive's file system below the archivers' reserve."""
        free = shutil.disk_usage(self.site.archive).free
        size = max(free - self.min_free_bytes + 2**30, 2**20)
        with open(self._ballast, "wb") as ballast:
            os.posix_fallocate(ballast.fileno(), 0, size)

    def _end(self, fault: PlannedFault, ok: bool, note: str) -> None:
        start, target = self._pending.pop(fault)
        self._window(fault.kind, target, fault.camera.value, start, ok, note)

    def _window(
        self, kind: FaultKind, target: str, camera: int, start: float, ok: bool, note: str
    ) -> None:
        """The fault is over; one whose target did not come back is a problem of the night."""
        window = FaultWindow(kind, target, camera, start, current_tai(), note)
        self.windows.append(window)
        _log.info("fault over", **window.as_dict())
        if not ok:
            self.record.problems.append(f"{kind.value} of {target}: {note}")
