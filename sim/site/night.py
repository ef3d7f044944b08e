"""What the demo checks while the night runs: every file re-read and verified as it is
announced, every header document fetched and checked, the latencies noted."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cscs.archiver.interface import IMAGE_ARCHIVED, IMAGE_RETRIEVAL_FAILED, ImageArchived
from cscs.camera.events import EndReadout
from cscs.camera.headers.announcement import LargeFileObjectAvailable
from cscs.camera.headers.reading import read_header_document
from cscs.camera.verify import verify_raw_file
from cscs.core.remote import EventStream, Parsed, ParsedStream, Received, Remote
from cscs.core.topics import CscAddress
from cscs.core.transport import Transport
from cscs.efd_writer.interface import EFD_WRITER_STATUS
from cscs.ocs.alarms import alarm_line
from cscs.ocs.progress import Progress

__all__ = [
    "NightLog",
    "NightStoppedError",
    "check_headers",
    "efd_summary",
    "note_alarm",
    "note_alarms",
    "note_ends",
    "note_in_oods",
    "note_seeing",
    "verify_archive",
    "verify_archived_file",
]


@dataclass
class NightLog:
    """What the night has shown so far, for the checks to add to and the summary to tell."""

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
    in_oods: dict[str, int] = field(default_factory=dict)  # image -> files said in the OODS
    oods_latencies: list[float] = field(default_factory=list)  # endReadout -> imageInOODS
    latest_seeing: float | None = None  # the site's, as the weather station last said
    seeing: dict[str, float] = field(default_factory=dict)  # image -> seeing as it was read
    problems: list[str] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)  # alarm events, in order
    efd: str = ""  # what the EFD writer says it recorded
    # QoS 1 is at-least-once, and overlapping subscriptions on one connection can
    # bring a message twice: each file and header is counted once
    seen: set[tuple[str, str]] = field(default_factory=set)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def note(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def settled(self) -> bool:
        """Every file of every image taken is checked, every header has come, and every
        image is in the OODS."""
        expected = self.taken * self.sensors_per_image
        in_oods = sum(n == self.sensors_per_image for n in self.in_oods.values())
        return (self.files + len(self.problems) >= expected and self.headers >= self.taken
                and in_oods + len(self.problems) >= self.taken)  # fmt: skip


class NightStoppedError(Exception):
    """The night could not go on; why is in the log's problems."""


async def note_ends(ends: ParsedStream[EndReadout], log: NightLog) -> None:
    """When each image's endReadout came (for the latencies)."""
    while True:
        end = await ends.next(None)
        log.ended[end.data.imageName] = time.perf_counter()
        if log.latest_seeing is not None:
            log.seeing[end.data.imageName] = log.latest_seeing


async def note_in_oods(in_oods: EventStream, log: NightLog, progress: Progress) -> None:
    """Each image the OODS says is in the Butler repository: the first time with all
    its files, the latency from its endReadout; a refusal is a problem of the night."""
    async for said in in_oods:
        image, data = str(said.data.get("imageName")), said.data
        sensors = [s for s in str(data.get("sensors", "")).split(",") if s]
        if data.get("statusCode") != 0:
            progress.say(f"  OODS: {image} {data.get('description')}")
            continue
        whole = len(sensors) == log.sensors_per_image
        if whole and log.in_oods.get(image) != len(sensors) and image in log.ended:
            log.oods_latencies.append(time.perf_counter() - log.ended[image])
        log.in_oods[image] = max(len(sensors), log.in_oods.get(image, 0))
        await log.note()


async def note_alarms(alarms: EventStream, log: NightLog, progress: Progress) -> None:
    """The Telemetry Gateway's alarm changes, as the night staff would see them."""
    async for change in alarms:
        note_alarm(change, log, progress)


def note_alarm(change: Received, log: NightLog, progress: Progress) -> None:
    log.alarms.append(change.data)
    progress.say(f"  alarm: {alarm_line(change.data)}")


async def note_seeing(weather: EventStream, log: NightLog) -> None:
    """The site's seeing as it changes (the simulated camera's stars follow it)."""
    async for received in weather:
        seeing = received.data.get("seeing")
        if isinstance(seeing, int | float):
            log.latest_seeing = float(seeing)


async def efd_summary(bus: Transport, writer: CscAddress) -> str:
    """What the EFD writer says it has recorded (its retained ``efdWriterStatus``), or
    why that is not known."""
    async with Remote(bus, writer) as remote, remote.stream(EFD_WRITER_STATUS.name) as status:
        try:
            data = (await status.next(timeout=5.0)).data
        except TimeoutError:
            return f"{writer} said nothing of what it recorded"
    state = "up" if data.get("storeUp") else f"DOWN ({data.get('lastError', '')})"
    return (f"{data.get('received')} messages recorded, {data.get('written')} written to "
            f"{data.get('storeUrl')} (store {state}), {data.get('spoolBytes')} bytes "
            "waiting in the spool")  # fmt: skip


def verify_archived_file(event: ImageArchived) -> list[str]:
    """Re-read an archived file as announced: what is wrong with it (empty: nothing)."""
    path = Path(urlparse(event.url).path)
    return verify_raw_file(path, event.byteSize, event.checkSum, event.checkSumAlgorithm)


async def verify_archive(events: EventStream, log: NightLog, progress: Progress) -> None:
    """Each imageArchived: re-read the file and check it; each imageRetrievalFailed: a
    problem of the night."""
    async for received in events:
        try:
            if received.name == IMAGE_RETRIEVAL_FAILED.name:
                failed = received.parse(IMAGE_RETRIEVAL_FAILED).data
                if _first(log, received.name, f"{failed.imageName} {failed.sensor}"):
                    log.problems.append(f"{failed.imageName} {failed.sensor}: {failed.description}")
                    await log.note()
            elif received.name == IMAGE_ARCHIVED.name:
                archived = received.parse(IMAGE_ARCHIVED).data
                if _first(log, received.name, f"{archived.imageName} {archived.sensor}"):
                    await _check_file(archived, log, progress)
        except ValueError as exc:
            log.problems.append(f"the archiver published a malformed {received.name}: {exc}")
            await log.note()


def _first(log: NightLog, kind: str, what: str) -> bool:
    """Whether this is the first time ``what`` is heard of (QoS 1 may bring it twice)."""
    if (kind, what) in log.seen:
        return False
    log.seen.add((kind, what))
    return True


async def _check_file(event: ImageArchived, log: NightLog, progress: Progress) -> None:
    problems = await asyncio.to_thread(verify_archived_file, event)
    if problems:
        log.problems += problems
        await log.note()
        return
    image = event.imageName
    log.files += 1
    log.files_with_header += event.headerComplete
    log.bytes_archived += event.byteSize
    log.archive.add(str(Path(urlparse(event.url).path).parents[3]))
    log.archived[image] = log.archived.get(image, 0) + 1
    if log.archived[image] == log.sensors_per_image:
        latency = time.perf_counter() - log.ended.get(image, time.perf_counter())
        log.latencies.append(latency)
        progress.say(
            f"  {image}: {log.sensors_per_image} file(s) archived, re-read and verified "
            f"{latency * 1e3:.0f} ms after endReadout"
        )
    await log.note()


async def check_headers(
    headers: ParsedStream[LargeFileObjectAvailable], log: NightLog, progress: Progress
) -> None:
    """Fetch each announced header document and check it as the archiver does."""
    while True:
        announced: Parsed[LargeFileObjectAvailable] = await headers.next(None)
        header = announced.data
        if not _first(log, announced.name, header.id):
            continue
        try:  # what the archiver checks: size, MD5, a header document of this image
            await asyncio.to_thread(read_header_document, header.url, header.id, header)
        except (OSError, ValueError) as exc:
            log.problems.append(f"header of {header.id}: {exc}")
            await log.note()
            continue
        log.headers += 1
        log.headers_complete += not header.missingKeywords
        if header.missingKeywords:
            progress.say(f"  {header.id}: header lacks {header.missingKeywords}")
        await log.note()
