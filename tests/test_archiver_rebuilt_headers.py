"""The archiver and headers rebuilt from the EFD: a file archived with an incomplete
header is rewritten when a better one is announced (checksums redone, catalog row
replaced, provenance recorded), never with a worse one; and catch-up asks the header
service to rebuild what is still incomplete, a few times, backing off. Offline."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import cast

import pytest
import structlog
from astropy.io import fits

from cscs.archiver.completion import HeaderCompletion, improves
from cscs.archiver.csc import ArchiverCsc
from cscs.archiver.headers import Header, HeaderSource
from cscs.archiver.rebuild_requests import RebuildRequests
from cscs.archiver.store import ArchiveStore
from cscs.camera.events import EndOfImageTelemetry, StartIntegration
from cscs.camera.geometry import Camera
from cscs.camera.headers.announcement import LargeFileObjectAvailable
from cscs.camera.verify import verify_raw_file
from cscs.catalog import ArchivedFile
from cscs.core.protocol import decode_json_object, encode
from cscs.core.settings import Settings
from cscs.core.tasks import Jobs
from cscs.core.testing import MemoryBroker, make_csc
from cscs.core.topics import CscAddress
from cscs.header_service.collect import Missing, Value
from cscs.header_service.derived import derived_keywords
from cscs.header_service.detectors import detector_entries, mid_exposure_pointing
from cscs.header_service.document import render
from sim.daq.hardware import focal_plane_hardware
from sim.testkit import config_dir
from tests.test_archiver_parts import FakeDaq

IMAGE = "AT_O_20261121_000007"
DAQ = encode({"url": "fake://daq", "capacityBytes": 1})
END_READOUT = {"imageName": IMAGE, "imageIndex": 1, "imagesInSequence": 1,
               "requestedExposureTime": 0.0, "timestampEndOfReadout": 1.795e9,
               "sensors": "R00_S00"}  # fmt: skip


def header(directory: Path, origin: str, airtemp: float | None) -> LargeFileObjectAvailable:
    """A header document (the header service's own code) with or without ``AIRTEMP``,
    written where the service writes, and its announcement."""
    start = StartIntegration(
        imageName=IMAGE, imageIndex=1, imagesInSequence=1, imageSource="AT",
        imageController="O", imageDate="20261121", imageNumber=7, groupId="g",
        imageType="BIAS", exposureTime=0.0, timestampAcquisitionStart=1.795e9, timeout=30.0,
        additionalKeys="reason", additionalValues="test",
    )  # fmt: skip
    end = EndOfImageTelemetry(
        imageName=IMAGE, timestampDateObs=1.795e9, timestampDateEnd=1.795e9,
        exposureTime=0.0, darkTime=0.1, measuredShutterOpenTime=0.0,
    )  # fmt: skip
    collected: dict[str, Value | Missing] = {
        "RA": Value(10.0, "deg"), "DEC": Value(-85.0, "deg"), "ROTPA": Value(0.0, "deg"),
        "AIRTEMP": Value(airtemp, "deg_C") if airtemp is not None
        else Missing("nothing received from Weather:0 tel/weather"),
    }  # fmt: skip
    primary = derived_keywords(Camera.LATISS, start, end, collected, origin)
    primary += list(collected.items())
    pointing = mid_exposure_pointing(collected)
    hardware = focal_plane_hardware(Camera.LATISS).by_detector()
    detectors = {"R00_S00": detector_entries(Camera.LATISS, "R00_S00", hardware, pointing, "C")}
    rendered = render(IMAGE, "HeaderService:1", "test", primary, detectors)
    path = directory / "20261121" / f"{IMAGE}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rendered.data)
    return LargeFileObjectAvailable(
        id=IMAGE, url=path.as_uri(), byteSize=len(rendered.data), checkSum=rendered.md5,
        mimeType="application/yaml", generator="HeaderService:1", version="test",
        missingKeywords=",".join(rendered.missing), rebuilt=origin == "EFD",
    )  # fmt: skip


async def test_a_file_with_an_incomplete_header_is_rewritten_with_a_rebuilt_one(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()

    async def open_fake(url: str, timeout: float, stall_timeout: float) -> FakeDaq:
        return FakeDaq([])

    camera, service = CscAddress("Camera", 1), CscAddress("HeaderService", 1)
    headers = tmp_path / "headers" / "HeaderService-1"
    settings = Settings(state_dir=tmp_path, config_dir=config_dir(tmp_path, {}, headers))
    async with (
        make_csc(ArchiverCsc, broker, index=1, settings=settings, open_daq=open_fake) as h,
        broker.transport() as bus,
        h.remote.stream("imageArchived") as archived,
    ):
        await bus.publish(camera.event("daqAvailable"), DAQ, retain=True)
        await h.remote.command("start", {"configurationOverride": "test"})
        await h.remote.command("enable")
        live = header(headers, "live", None)
        await bus.publish(service.event("largeFileObjectAvailable"), encode(live.model_dump()))
        await bus.publish(camera.event("endReadout"), encode(END_READOUT))
        first = (await archived.next(30)).data
        assert first["headerComplete"] is False
        rebuilt = header(headers, "EFD", 8.5)
        await bus.publish(service.event("largeFileObjectAvailable"), encode(rebuilt.model_dump()))
        second = (await archived.next(30)).data
        csc = h.csc
        assert isinstance(csc, ArchiverCsc)
        row = csc.pipeline.current_store().catalog.lookup(IMAGE, "R00_S00")
    assert second["headerComplete"] is True
    assert second["checkSum"] != first["checkSum"]
    path = Path(second["url"].removeprefix("file://"))
    assert verify_raw_file(path, second["byteSize"], second["checkSum"],
                           second["checkSumAlgorithm"]) == []  # fmt: skip
    with fits.open(path) as hdus:
        assert (hdus[0].header["HDRSRC"], hdus[0].header["AIRTEMP"]) == ("EFD", 8.5)
    assert row is not None
    assert (row.header_source, row.header_complete, row.checksum) == (
        "efd", True, second["checkSum"])  # fmt: skip


async def test_a_header_rebuilt_while_its_announcement_was_missed_is_found_by_catch_up(
    tmp_path: Path,
) -> None:
    """The live header was heard; the rebuilt one replaced it on disk, its announcement
    lost: catch-up reads the document again (the announced MD5 no longer matches) from
    where the header service writes, and completes the file with it."""
    broker = MemoryBroker()

    async def open_fake(url: str, timeout: float, stall_timeout: float) -> FakeDaq:
        return FakeDaq([])

    camera, service = CscAddress("Camera", 1), CscAddress("HeaderService", 1)
    headers = tmp_path / "headers" / "HeaderService-1"
    settings = Settings(state_dir=tmp_path, config_dir=config_dir(tmp_path, {}, headers))
    async with (
        make_csc(ArchiverCsc, broker, index=1, settings=settings, open_daq=open_fake) as h,
        broker.transport() as bus,
        h.remote.stream("imageArchived") as archived,
    ):
        await bus.publish(camera.event("daqAvailable"), DAQ, retain=True)
        await h.remote.command("start", {"configurationOverride": "test"})
        await h.remote.command("enable")
        live = header(headers, "live", None)
        await bus.publish(service.event("largeFileObjectAvailable"), encode(live.model_dump()))
        await bus.publish(camera.event("endReadout"), encode(END_READOUT))
        assert (await archived.next(30)).data["headerComplete"] is False
        header(headers, "EFD", 7.0)  # written where the live one was; nobody hears of it
        await h.remote.command("catchUp", timeout=30)
        completed = (await archived.next(30)).data
    assert completed["headerComplete"] is True
    with fits.open(Path(completed["url"].removeprefix("file://"))) as hdus:
        assert (hdus[0].header["HDRSRC"], hdus[0].header["AIRTEMP"]) == ("EFD", 7.0)


def _row(**changes: object) -> ArchivedFile:
    base = ArchivedFile(
        image_name=IMAGE, sensor="R00_S00", instrument="LATISS", day_obs="20261121",
        path="/a.fits", byte_size=1, checksum="1", checksum_algorithm="adler32",
        header_complete=False, missing_keywords="AIRTEMP,SEEING", daq_image="d",
        header_url="file:///h.yaml", header_md5="a" * 32, software_version="0",
        exposure_start_tai=0.0, archived_tai=0.0, header_source="live",
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _header(missing: str, source: str = "live", md5: str = "b" * 32) -> Header:
    return Header("file:///h.yaml", md5, [], {}, {}, missing, (), source)


@pytest.mark.parametrize(
    ("row", "header", "better"),
    [
        (_row(header_url="", header_md5="", missing_keywords="header not received",
              header_source=""), _header("AIRTEMP,SEEING,HUMIDITY"), True),
        (_row(), _header("AIRTEMP"), True),
        (_row(), _header("AIRTEMP,SEEING", "efd"), False),  # rebuilt, but no better
        (_row(), _header("HUMIDITY", "efd"), False),  # fewer, but drops HUMIDITY's value
        (_row(), _header("SEEING", "efd"), True),  # a strict subset
        (_row(), _header("", "efd"), True),
        (_row(), _header("AIRTEMP,SEEING"), False),  # another live one, no better
        (_row(), _header("AIRTEMP,SEEING,HUMIDITY", "efd"), False),  # worse
        (_row(), _header("", md5="a" * 32), False),  # the same header
        (_row(header_source="efd"), _header("AIRTEMP,SEEING", "efd"), False),
    ],
)  # fmt: skip
def test_a_header_replaces_a_files_only_when_it_is_better(
    row: ArchivedFile, header: Header, better: bool
) -> None:
    assert improves(row, header) is better


def test_rebuilds_are_asked_after_a_while_a_few_times_backing_off() -> None:
    requests = RebuildRequests(attempts=3)
    incomplete = {"b": 100.0, "a": 50.0}
    assert requests.due(incomplete, 100.0, after=60.0, limit=10) == []  # too soon
    assert requests.due(incomplete, 115.0, after=60.0, limit=10) == ["a"]
    assert requests.due(incomplete, 115.0, after=60.0, limit=10) == []  # backing off
    assert requests.due(incomplete, 300.0, after=60.0, limit=1) == ["a"]  # oldest first
    asked = {"a": 2, "b": 0}
    for now in range(300, 100_000, 50):
        for image in requests.due(incomplete, float(now), after=60.0, limit=10):
            asked[image] += 1
    assert asked == {"a": 3, "b": 3}  # never more than the attempts
    assert requests.due({"b": 100.0}, 1e6, after=60.0, limit=10) == []
    assert len(requests) == 1  # "a" complete now: forgotten
    assert RebuildRequests().due({"c": 0.0}, 1e6, after=0.0, limit=10) == []  # 0: never


def test_images_tracked_for_rebuilds_are_bounded() -> None:
    requests = RebuildRequests(remembered=5)
    incomplete = {f"i{n}": float(n) for n in range(20)}
    assert len(requests.due(incomplete, 1e6, after=1.0, limit=100)) == 5
    assert len(requests) == 5
    assert requests.full


def test_images_given_up_make_room_for_new_ones() -> None:
    requests = RebuildRequests(attempts=1, remembered=2)
    incomplete = {f"i{n}": float(n) for n in range(4)}  # never completed
    assert requests.due(incomplete, 1e6, after=1.0, limit=2) == ["i0", "i1"]
    assert requests.due(incomplete, 2e6, after=1.0, limit=10) == ["i2", "i3"]
    assert not requests.full
    assert len(requests) == 2  # given up, remembered in a bounded memory
    assert requests.due(incomplete, 3e6, after=1.0, limit=2) == ["i0", "i1"]  # forgotten


async def test_catch_up_asks_the_header_service_to_rebuild_a_header(tmp_path: Path) -> None:
    broker = MemoryBroker()

    async def open_fake(url: str, timeout: float, stall_timeout: float) -> FakeDaq:
        return FakeDaq([])

    camera, service = CscAddress("Camera", 1), CscAddress("HeaderService", 1)
    headers = tmp_path / "headers" / "HeaderService-1"
    archiver = {"header_timeout": 0.0, "header_rebuild_after": 0.001}
    settings = Settings(state_dir=tmp_path, config_dir=config_dir(tmp_path, archiver, headers))
    async with (
        make_csc(ArchiverCsc, broker, index=1, settings=settings, open_daq=open_fake) as h,
        broker.transport() as bus,
        h.remote.stream("imageArchived") as archived,
        bus.subscription(service.command("rebuildHeaders")) as commands,
    ):
        await bus.publish(camera.event("daqAvailable"), DAQ, retain=True)
        await h.remote.command("start", {"configurationOverride": "test"})
        await h.remote.command("enable")
        await bus.publish(camera.event("endReadout"), encode(END_READOUT))
        assert (await archived.next(30)).data["headerComplete"] is False
        await h.remote.command("catchUp", timeout=30)
        async for message in commands:
            asked = decode_json_object(message.payload)
            break
    assert asked["params"] == {"firstImage": IMAGE}


class _Files:
    """The catalog rows of one image, rewritten by a slow fake of the archiver's
    rewrite: the first rewrite waits for ``gate``."""

    def __init__(self, sensors: list[str]) -> None:
        self.rows = {s: _row(sensor=s) for s in sensors}
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.first = True

    def files_of(self, image: str) -> list[ArchivedFile]:
        return list(self.rows.values())

    def read_back(self, row: ArchivedFile) -> str:
        return row.sensor

    async def rewrite(self, store: object, pixels: str, header: Header) -> None:
        if self.first:
            self.first = False
            self.waiting.set()
            await self.gate.wait()
        self.rows[pixels] = dataclasses.replace(
            self.rows[pixels], header_md5=header.md5, missing_keywords=header.missing,
            header_source=header.source, header_complete=not header.missing,
        )  # fmt: skip


class _Headers:
    def __init__(self, header: Header) -> None:
        self.header = header

    async def get(self, image: str, wait: float) -> Header:
        return self.header


async def test_two_completions_of_an_image_at_once_end_with_the_better_header() -> None:
    files = _Files(["R00_S00", "R00_S01", "R00_S02"])
    worse, better = _header("SEEING", md5="1" * 32), _header("", "efd", md5="2" * 32)
    headers = _Headers(worse)
    log = structlog.get_logger()
    completion = HeaderCompletion(
        store=lambda: cast(ArchiveStore, files), headers=cast(HeaderSource, headers),
        in_flight=set(), rewrite=files.rewrite,  # type: ignore[arg-type]
        header_wait=lambda: 0.0,
        jobs=Jobs(log, "test"), log=log, fatal=lambda code, why: None,
        failed=lambda image, exc: asyncio.sleep(0),
    )  # fmt: skip
    first = asyncio.create_task(completion.complete(IMAGE))  # catch-up, with the worse
    await files.waiting.wait()
    headers.header = better  # the rebuilt one is announced meanwhile
    second = asyncio.create_task(completion.complete(IMAGE))
    # Give the second a chance to run ahead while the first is stuck (it must not:
    # it waits for the first); the outcome below does not depend on this bound.
    await asyncio.wait({second}, timeout=0.5)
    files.gate.set()
    await asyncio.gather(first, second)
    assert {r.header_md5 for r in files.rows.values()} == {better.md5}
