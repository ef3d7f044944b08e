"""What the soak hears while the night runs, from outside as any MQTT client would:
each file re-read and checked as it is announced (then pruned, once nothing needs it
any more), each image's QC stage, what the gateway forwards and alarms, and every
CSC's state (a CSC in FAULT is recovered, as night staff would, once what
held it there is gone)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import structlog
from astropy.io import fits

from cscs.archiver.interface import IMAGE_ARCHIVED
from cscs.core import generic as g
from cscs.core.bus import Bus
from cscs.core.protocol import decode_json_object
from cscs.core.remote import AckError, Received, Remote
from cscs.core.states import State
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress
from cscs.core.transport import Subscription
from cscs.efd_writer.interface import EFD_WRITER_STATUS, EfdWriterStatus
from cscs.telemetry_gateway.interface import ALARM, IMAGE_QUALITY
from sim.site.night import verify_archived_file
from sim.site.soak.reconcile import AlarmRecord

__all__ = ["NightRecord", "Verified"]

#: s: a verified file nobody has asked for since is pruned anyway. Long enough for QC
#: caught up after an OCS Batch restart (~30 s) and a header rebuilt after a header
#: service's (at its start), both of which read the file.
_PRUNE_AFTER = 180.0
_log = structlog.get_logger("soak")


@dataclass
class Verified:
    path: Path
    checksum: str
    header_complete: bool
    at: float  # monotonic
    pruned: bool = False
    header_source: str = ""  # its HDRSRC: "live", "EFD" (rebuilt), "" (none said)


@dataclass
class NightRecord:
    """Everything heard, for the night's loops to wait on and the reconciliation."""

    prefix: str
    dm_prefix: str = "dm"
    prune: bool = True
    verified: dict[tuple[str, str], Verified] = field(default_factory=dict)
    announced: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    stages: dict[str, tuple[str, str]] = field(default_factory=dict)
    in_oods: dict[str, set[str]] = field(default_factory=dict)  # image -> sensors registered
    forwarded: set[str] = field(default_factory=set)
    alarms: dict[str, AlarmRecord] = field(default_factory=dict)
    states: dict[str, State] = field(default_factory=dict)
    state_at: dict[str, float] = field(default_factory=dict)  # CSC -> its last summaryState
    recovered_at: dict[str, float] = field(default_factory=dict)  # CSC -> out of FAULT
    recovery_delay: dict[str, float] = field(default_factory=dict)
    faults_seen: list[dict[str, object]] = field(default_factory=list)  # FAULTs, recovered
    archived: dict[str, int] = field(default_factory=dict)  # image -> sensors verified
    last_stage: float = 0.0  # monotonic
    last_archived: float = 0.0  # monotonic
    problems: list[str] = field(default_factory=list)
    unmatched: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (image, sensor)
    pruned_bytes: int = 0
    efd_status: EfdWriterStatus | None = None  # the EFD writer's last efdWriterStatus
    efd_status_at: float = 0.0  # monotonic, when it was heard
    disk_held: asyncio.Event = field(default_factory=asyncio.Event)  # set: do not recover yet
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def wait(self, predicate: Callable[[], bool], timeout: float, what: str = "") -> bool:
        """Whether ``predicate`` came true within ``timeout`` s (checked at every change,
        and every second for what changes without a message: files pruned, time); a
        wait of more than a minute is logged, each minute, with ``what`` it waits for."""
        start = time.monotonic()
        deadline, said = start + timeout, start
        while not predicate():
            now = time.monotonic()
            if now - said > 60.0:
                said = now
                _log.warning("still waiting", what=what or "?", seconds=round(now - start))
            left = deadline - now
            if left <= 0:
                _log.warning("gave up waiting", what=what or "?", seconds=round(timeout))
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 1.0)), self.changed:
                    await self.changed.wait()
        return True

    def enabled_since(self, csc: str, since: float) -> bool:
        """Whether ``csc`` said ENABLED after ``since`` (monotonic): a CSC says so only
        once configured and listening, after a restart or on its next connection."""
        return self.state_at.get(csc, 0.0) > since and self.states.get(csc) is State.ENABLED

    # ---- listening -------------------------------------------------------------------

    async def start(
        self, bus: Bus, recover: Callable[[CscAddress, dict[str, object]], object]
    ) -> None:
        """Listen on ``bus`` until :meth:`stop`; ``recover`` brings a CSC out of FAULT."""
        stages = await bus.subscribe(f"{self.dm_prefix}/status/image-qc", maxsize=100_000)
        self._tasks.append(asyncio.create_task(self._follow_stages(stages)))
        listen = [
            (f"{self.prefix}/Archiver/+/evt/{IMAGE_ARCHIVED.name}", self._archived),
            (f"{self.prefix}/TelemetryGateway/0/evt/{IMAGE_QUALITY.name}", self._forwarded),
            (f"{self.prefix}/TelemetryGateway/0/evt/{ALARM.name}", self._alarm),
            (f"{self.prefix}/+/+/evt/{g.SUMMARY_STATE.name}", self._state),
            (f"{self.prefix}/EfdWriter/0/evt/{EFD_WRITER_STATUS.name}", self._efd_status),
            (f"{self.prefix}/OODS/+/evt/imageInOODS", self._in_oods),
        ]
        self._recover = recover
        for topic, handler in listen:
            subscription = await bus.subscribe(topic, maxsize=100_000)
            self._tasks.append(asyncio.create_task(self._follow(subscription, handler)))
        if self.prune:
            self._tasks.append(asyncio.create_task(self._pruning(), name="soak-prune"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks, _log, "stopping the soak's listeners")

    async def _follow(
        self, subscription: Subscription, handler: Callable[[Received], object]
    ) -> None:
        async for message in subscription:
            received = Received.from_message(message)
            if received is None:
                continue
            try:
                result = handler(received)
                if asyncio.iscoroutine(result):
                    await result
            except ValueError as exc:
                self.problems.append(f"{received.address} {received.name}: unreadable ({exc})")
            except Exception as exc:
                self.problems.append(f"{received.address} {received.name}: {exc!r}")
            async with self.changed:
                self.changed.notify_all()

    async def _archived(self, received: Received) -> None:
        event = received.parse(IMAGE_ARCHIVED).data
        key = (event.imageName, event.sensor)
        path = Path(urlparse(event.url).path)
        self.announced.setdefault(key, set()).add(str(path))
        known = self.verified.get(key)
        if known is not None and known.checksum == event.checkSum and known.path == path:
            return  # heard twice (QoS 1)
        problems = await asyncio.to_thread(verify_archived_file, event)
        if problems:
            # Replaced since it was announced (its header completed, a better one
            # rebuilt from the EFD: a second imageArchived follows), or damaged: the
            # account checks every file not verified here against the catalog, which
            # tells the two apart.
            self.unmatched[key] = problems
            return
        self.unmatched.pop(key, None)
        source = await asyncio.to_thread(header_source, path)  # before it can be pruned
        self.last_archived = time.monotonic()
        if known is None:
            self.archived[event.imageName] = self.archived.get(event.imageName, 0) + 1
        self.verified[key] = Verified(path, event.checkSum, event.headerComplete, time.monotonic(),
                                      header_source=source)  # fmt: skip

    async def _follow_stages(self, subscription: Subscription) -> None:
        """Each image's QC stage, on a DM-internal topic (not a CSC's: no address)."""
        async for message in subscription:
            try:
                data = decode_json_object(message.payload)
            except ValueError as exc:
                self.problems.append(f"{message.topic}: unreadable ({exc})")
                continue
            image, status = data.get("imageName"), data.get("status")
            if isinstance(image, str) and isinstance(status, str):
                self.stages[image] = (status, str(data.get("description", "")))
                self.last_stage = time.monotonic()
            async with self.changed:
                self.changed.notify_all()

    def _in_oods(self, received: Received) -> None:
        """The files of an image the OODS has registered (a file is not pruned before:
        the OODS reads its header to register it)."""
        image, sensors = received.data.get("imageName"), received.data.get("sensors")
        if isinstance(image, str) and isinstance(sensors, str):
            self.in_oods.setdefault(image, set()).update(s for s in sensors.split(",") if s)

    def _forwarded(self, received: Received) -> None:
        self.forwarded.add(received.parse(IMAGE_QUALITY).data.imageName)

    def _alarm(self, received: Received) -> None:
        alarm = received.parse(ALARM).data
        record = self.alarms.setdefault(alarm.name, AlarmRecord(alarm.name))
        record.heard(alarm.severity, alarm.reason)

    def efd_drained_since(self, since: float) -> bool:
        """Whether the EFD writer said, after ``since`` (monotonic), that its store is up
        and nothing is left in its spool: all it heard is in the store."""
        status = self.efd_status
        return (
            status is not None
            and self.efd_status_at > since
            and status.storeUp
            and status.spoolBytes == 0
        )

    def _efd_status(self, received: Received) -> None:
        self.efd_status = received.parse(EFD_WRITER_STATUS).data
        self.efd_status_at = time.monotonic()

    def _state(self, received: Received) -> None:
        state = State(received.parse(g.SUMMARY_STATE).data.summaryState)
        address = received.address
        before = self.states.get(str(address))
        self.states[str(address)] = state
        self.state_at[str(address)] = time.monotonic()
        if state is State.FAULT and before is not State.FAULT and not received.retained:
            fault: dict[str, object] = {"csc": str(address), "tai": round(received.sent_tai, 3)}
            self.faults_seen.append(fault)
            self._recover(address, fault)

    # ---- pruning ---------------------------------------------------------------------

    async def _pruning(self) -> None:
        """Every 2 s (but not while the disk is held full): remove verified files nothing
        will read again: with their header, registered by the OODS, and their image's QC
        stage heard (or left unasked for ``_PRUNE_AFTER`` s). The catalog keeps each
        file's row and checksum."""
        while True:
            await asyncio.sleep(2.0)
            if self.disk_held.is_set():
                continue  # the disk is being kept full on purpose: freeing it would undo that
            now = time.monotonic()
            due = [
                v for (image, sensor), v in list(self.verified.items())
                if not v.pruned and (
                    (v.header_complete and image in self.stages
                     and sensor in self.in_oods.get(image, ()))
                    or now - v.at > _PRUNE_AFTER
                )
            ]  # fmt: skip
            self.pruned_bytes += await asyncio.to_thread(_unlink, due)

    async def prune_all(self) -> None:
        self.pruned_bytes += await asyncio.to_thread(
            _unlink, [v for v in self.verified.values() if not v.pruned]
        )


def header_source(path: Path) -> str:
    """The file's ``HDRSRC`` (where its header came from: ``live``, or ``EFD`` when
    rebuilt); "" when it has none or cannot be read (verification reports the latter)."""
    try:
        value = fits.getval(path, "HDRSRC", ext=0)
    except (OSError, KeyError, ValueError):
        return ""
    return value.strip() if isinstance(value, str) else ""


def _unlink(files: list[Verified]) -> int:
    freed = 0
    for verified in files:
        with contextlib.suppress(FileNotFoundError):
            freed += verified.path.stat().st_size
            os.unlink(verified.path)
        verified.pruned = True
    return freed


async def recover(
    bus: Bus, address: CscAddress, record: NightRecord, fault: dict[str, object]
) -> None:
    """Night staff's recovery of a CSC in FAULT: once nothing holds it there (a full
    disk), standby, start, enable; what it said is kept with the FAULT."""
    started = time.monotonic()
    csc = str(address)
    # Back to FAULT soon after the last recovery: what put it there has not gone away;
    # wait longer each time (10 s, 20 s, … 160 s) rather than spin.
    again = started - record.recovered_at.get(csc, -1e9) < 60.0
    delay = min(2 * record.recovery_delay.get(csc, 5.0), 160.0) if again else 0.0
    record.recovery_delay[csc] = delay or 5.0
    try:
        async with Remote(bus, address) as remote:
            with contextlib.suppress(TimeoutError, ValueError):
                error = await remote.next(g.ERROR_CODE, timeout=5)
                fault["report"] = f"{error.data.errorCode}: {error.data.errorReport}"
            await record.wait(lambda: not record.disk_held.is_set(), 600, "the disk freed")
            await asyncio.sleep(delay)
            for command in ("standby", "start", "enable"):
                await remote.command(command, timeout=120)
    except (AckError, TimeoutError) as exc:
        record.problems.append(f"{address} could not be recovered from FAULT: {exc}")
        return
    record.recovered_at[csc] = time.monotonic()
    fault["recoveredAfter"] = round(record.recovered_at[csc] - started, 1)
