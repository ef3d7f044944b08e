"""The archiver's parts, each on its own and offline: the header source, DAQ reads with
their retries, the archive store, the catch-up planner. (The whole archiver on real
brokers is ``test_archiver.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeoutError
from pathlib import Path

import numpy as np
import pytest
import structlog

from cscs.archiver.catchup import catch_up_periodically
from cscs.archiver.csc import ArchiverCsc
from cscs.archiver.headers import HeaderSource
from cscs.archiver.plan import header_wait, plan_catch_up
from cscs.archiver.reader import DaqReads, ReadFailedError
from cscs.archiver.store import ArchiveStore, ArchiveUnwritableError, Provenance
from cscs.camera.events import EndOfImageTelemetry, StartIntegration
from cscs.camera.geometry import SEGMENT_COLS, SEGMENT_ROWS, SEGMENTS, Camera
from cscs.camera.headers.announcement import LargeFileObjectAvailable
from cscs.camera.headers.reading import HeaderTrust
from cscs.camera.verify import verify_raw_file
from cscs.core import generic as g
from cscs.core.protocol import encode
from cscs.core.settings import Settings
from cscs.core.testing import MemoryBroker, make_csc
from cscs.core.topics import CscAddress
from cscs.daq.errors import (
    ChecksumMismatchError,
    DaqError,
    DaqUnavailableError,
    ImageEvictedError,
)
from cscs.daq.reader import ImageInfo, SensorPixels
from sim.testkit import config_dir
from tests.support.headers import rendered_header

IMAGE = "AT_O_20261121_000007"
LOG = structlog.get_logger("test")


def pixels(image: str = IMAGE, sensor: str = "R00_S00", seed: int = 0) -> SensorPixels:
    rng = np.random.default_rng(seed)
    segments = tuple(
        rng.integers(0, 2**18, (SEGMENT_ROWS, SEGMENT_COLS), dtype=np.int32) for _ in SEGMENTS
    )
    return SensorPixels.trusted(image, sensor, segments)


def header_document(directory: Path, image: str = IMAGE) -> LargeFileObjectAvailable:
    """A header written by the header service's own code into ``directory`` (as
    ``{directory}/{image}.yaml``), and its announcement."""
    start = StartIntegration(
        imageName=image, imageIndex=1, imagesInSequence=1, imageSource="AT",
        imageController="O", imageDate="20261121", imageNumber=7, groupId="g",
        imageType="BIAS", exposureTime=0.0, timestampAcquisitionStart=1.795e9, timeout=30.0,
        additionalKeys="", additionalValues="",
    )  # fmt: skip
    end = EndOfImageTelemetry(
        imageName=image, timestampDateObs=1.795e9, timestampDateEnd=1.795e9,
        exposureTime=0.0, darkTime=0.1, measuredShutterOpenTime=0.0,
    )  # fmt: skip
    rendered = rendered_header(Camera.LATISS, start, end, ["R00_S00"])
    path = directory / f"{image}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rendered.data)
    return LargeFileObjectAvailable(
        id=image, url=path.as_uri(), byteSize=len(rendered.data), checkSum=rendered.md5,
        mimeType="application/yaml", generator="HeaderService:1", version="test",
        missingKeywords="",
    )  # fmt: skip


def trusting(directory: Path) -> HeaderTrust:
    """Header documents may be read from ``directory`` (and under it) only."""
    return HeaderTrust((directory,))


# ---- the header source ---------------------------------------------------------------------


async def test_an_announced_header_is_fetched_checked_and_kept(tmp_path: Path) -> None:
    source = HeaderSource(LOG, trust=trusting(tmp_path))
    announcement = header_document(tmp_path)
    source.announce(announcement)
    header = await source.get(IMAGE, wait=0)
    assert header is not None
    assert header.missing == ""
    assert header.md5 == announcement.checkSum
    assert ("OBSID", IMAGE, "image name") in header.primary
    assert header.segments == {}  # the geometry's: the archiver writes it itself
    await asyncio.to_thread(Path(announcement.url.removeprefix("file://")).unlink)
    assert await source.get(IMAGE, wait=0) is header  # fetched once


async def test_a_header_announced_later_is_waited_for(tmp_path: Path) -> None:
    source = HeaderSource(LOG, trust=trusting(tmp_path))
    waiting = asyncio.create_task(source.get(IMAGE, wait=10))
    await asyncio.sleep(0)
    assert not waiting.done()
    source.announce(header_document(tmp_path))
    assert await waiting is not None


async def test_a_header_that_never_comes_is_waited_for_once_per_image(tmp_path: Path) -> None:
    source = HeaderSource(LOG, trust=trusting(tmp_path))
    assert await source.get(IMAGE, wait=0.01) is None
    again = asyncio.create_task(source.get(IMAGE, wait=10))  # another sensor of the image
    await asyncio.sleep(0)
    assert again.done()
    assert again.result() is None


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda data: data.replace(b"OBSID", b"OBSIX"), "does not match its announcement"),
        (lambda data: b"just a string\n", "does not match its announcement"),
    ],
)
async def test_a_header_unlike_its_announcement_is_not_used(
    tmp_path: Path, damage: object, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    announcement = header_document(tmp_path)
    path = Path(announcement.url.removeprefix("file://"))
    assert callable(damage)
    data = await asyncio.to_thread(path.read_bytes)
    await asyncio.to_thread(path.write_bytes, damage(data))
    source = HeaderSource(LOG, trust=trusting(tmp_path))
    source.announce(announcement)
    assert await source.get(IMAGE, wait=0) is None
    assert why in capsys.readouterr().out


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (b"just a string\n", "a header document is a mapping, not str"),
        (b"imageName: x\n", "imageName: Value error, not an image name"),
        (f"imageName: {IMAGE}\n".encode(), "generator: Field required"),
        (b"[unclosed\n", "not valid YAML"),
    ],
)
async def test_a_document_that_is_no_header_is_refused_naming_why(
    tmp_path: Path, document: bytes, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With its MD5 right (the announcer is wrong, not the transfer): never a crash."""
    path = tmp_path / "h.yaml"
    path.write_bytes(document)
    source = HeaderSource(LOG, trust=trusting(tmp_path))
    source.announce(
        LargeFileObjectAvailable(
            id=IMAGE, url=path.as_uri(), byteSize=len(document),
            checkSum=hashlib.md5(document).hexdigest(), mimeType="application/yaml",
            generator="x", version="x", missingKeywords="",
        )
    )  # fmt: skip
    assert await source.get(IMAGE, wait=0) is None
    assert why in capsys.readouterr().out


async def test_an_unannounced_header_is_found_where_the_template_says(tmp_path: Path) -> None:
    header_document(tmp_path)  # written, never announced
    source = HeaderSource(LOG, template=tmp_path.as_uri() + "/{image}.yaml",
                          trust=trusting(tmp_path))  # fmt: skip
    header = await source.get(IMAGE, wait=0)
    assert header is not None
    assert await HeaderSource(LOG, template=tmp_path.as_uri() + "/x/{image}.yaml",
                              trust=trusting(tmp_path)).get(IMAGE, wait=0) is None  # fmt: skip


# ---- DAQ reads -------------------------------------------------------------------------------


class FakeDaq:
    """A DAQ reader that fails as told, then reads."""

    endpoint = "fake://daq"

    def __init__(self, failures: Sequence[DaqError], answers: Sequence[SensorPixels] = ()) -> None:
        self.failures = list(failures)
        self.answers = list(answers)
        self.reads = 0

    async def list_images(self) -> list[ImageInfo]:
        return []

    async def read_sensor(self, image: str, sensor: str) -> SensorPixels:
        self.reads += 1
        if self.failures:
            raise self.failures.pop(0)
        if self.answers:
            return self.answers.pop(0)
        return pixels(image, sensor)

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


async def test_a_failure_that_may_pass_is_retried_with_back_off() -> None:
    clock = Clock()
    reads = DaqReads(LOG, pytest.fail, attempts=3, sleep=clock.sleep, clock=clock)
    reads.daq = daq = FakeDaq([ChecksumMismatchError(IMAGE, "R00_S00", "segment 3 is corrupt")])
    got = await reads.read(IMAGE, "R00_S00", verified)
    assert got.sensor == "R00_S00"
    assert daq.reads == 2
    assert len(clock.slept) == 1
    assert 0.1 <= clock.slept[0] <= 0.2


async def verified(got: SensorPixels) -> SensorPixels:
    """What a use of the pixels does first, here alone (the writer does it in its pass)."""
    got.verify()
    return got


async def test_a_segment_that_does_not_sum_to_the_daqs_datasum_is_read_again() -> None:
    clock = Clock()
    reads = DaqReads(LOG, pytest.fail, attempts=3, sleep=clock.sleep, clock=clock)
    good = pixels()
    damaged = np.array(good.segments[5])
    damaged[100, 7] ^= 1 << 20  # one bit flipped on the way
    corrupt = SensorPixels(IMAGE, "R00_S00", (*good.segments[:5], damaged, *good.segments[6:]),
                           good.datasums)  # fmt: skip
    reads.daq = daq = FakeDaq([], answers=[corrupt, good])
    uses: list[SensorPixels] = []

    async def use(got: SensorPixels) -> SensorPixels:
        uses.append(got)
        return await verified(got)

    assert await reads.read(IMAGE, "R00_S00", use) is good
    assert (daq.reads, len(uses), len(clock.slept)) == (2, 2, 1)


async def test_after_the_last_corrupt_read_the_segment_is_named() -> None:
    clock = Clock()
    reads = DaqReads(LOG, pytest.fail, attempts=2, sleep=clock.sleep, clock=clock)
    good = pixels()
    wrong = SensorPixels(IMAGE, "R00_S00", good.segments, (*good.datasums[:-1], 0))
    reads.daq = FakeDaq([], answers=[wrong, wrong])
    with pytest.raises(ReadFailedError, match=f"segment {SEGMENTS[-1].name} is corrupt"):
        await reads.read(IMAGE, "R00_S00", verified)


async def test_a_failure_that_cannot_pass_is_final_at_once() -> None:
    clock = Clock()
    reads = DaqReads(LOG, pytest.fail, attempts=5, sleep=clock.sleep, clock=clock)
    reads.daq = daq = FakeDaq([ImageEvictedError(IMAGE, "R00_S00", "evicted")])
    with pytest.raises(ReadFailedError, match="evicted"):
        await reads.read(IMAGE, "R00_S00", verified)
    assert (daq.reads, clock.slept) == (1, [])


async def test_after_the_last_attempt_the_cause_is_reported() -> None:
    clock = Clock()
    reads = DaqReads(LOG, pytest.fail, attempts=2, sleep=clock.sleep, clock=clock)
    errors = [ChecksumMismatchError(IMAGE, "R00_S00", f"corrupt {n}") for n in range(2)]
    reads.daq = FakeDaq(list(errors))
    with pytest.raises(ReadFailedError, match="corrupt 1"):
        await reads.read(IMAGE, "R00_S00", verified)


async def test_a_daq_silent_for_longer_than_allowed_is_reported_unreachable() -> None:
    clock = Clock()
    reports: list[str] = []
    reads = DaqReads(LOG, reports.append, attempts=10, fault_after=3.0, sleep=clock.sleep,
                     clock=clock)  # fmt: skip
    silence = [DaqUnavailableError(IMAGE, "R00_S00", "no answer") for _ in range(10)]
    reads.daq = FakeDaq(silence)
    with pytest.raises(ReadFailedError, match="no answer"):
        await reads.read(IMAGE, "R00_S00", verified)
    assert reports
    assert reports[0].startswith("the DAQ has been unreachable for ")
    assert clock.now > 3.0


async def test_no_daq_known_is_a_read_failure_naming_it() -> None:
    clock = Clock()
    reads = DaqReads(LOG, pytest.fail, attempts=2, sleep=clock.sleep, clock=clock)
    with pytest.raises(ReadFailedError, match="no DAQ known yet"):
        await reads.read(IMAGE, "R00_S00", verified)


# ---- the archive store ----------------------------------------------------------------------


@pytest.mark.parametrize("image", ["AT_H_20261121_000001", "AT_O_20261121_000000"])
def test_every_name_the_icd_allows_is_archived(tmp_path: Path, image: str) -> None:
    """ICD §5 names: any capital controller letter, any six digits."""
    store, _ = ArchiveStore.open(tmp_path / "archive", Camera.LATISS)
    try:
        row = store.write(pixels(image), None, Provenance("tcp://daq", "test"))
        assert Path(row.path).name == f"{image}_R00_S00.fits"
    finally:
        store.close()


@pytest.mark.parametrize(
    "compression",
    ["", pytest.param("RICE_1", marks=pytest.mark.broker)],  # worker processes
)
def test_a_file_is_written_whole_verified_and_recorded(tmp_path: Path, compression: str) -> None:
    """Uncompressed (direct I/O from the staging buffer) and RICE_1 (in the store's
    worker processes, stopped with it) alike."""
    store, stale = ArchiveStore.open(tmp_path / "archive", Camera.LATISS, compression=compression)
    try:
        assert stale == 0
        row = store.write(pixels(), None, Provenance("tcp://daq", "test"))
        path = Path(row.path)
        assert path == tmp_path / "archive/LATISS/20261121" / IMAGE / f"{IMAGE}_R00_S00.fits"
        assert verify_raw_file(path, row.byte_size, row.checksum, "adler32") == []
        assert (row.header_complete, row.missing_keywords) == (False, "header not received")
        assert store.is_archived(IMAGE, "R00_S00")
        assert store.without_header() == [row]
        back = store.read_back(row)
        assert all(
            np.array_equal(a, b) for a, b in zip(back.segments, pixels().segments, strict=True)
        )
    finally:
        store.close()


def test_closing_the_store_waits_for_a_file_under_way(tmp_path: Path) -> None:
    """The archiver stopping while a file is written (its job cancelled, the thread still
    writing): the file ends whole and in the catalog, not on disk without a row."""
    store, _ = ArchiveStore.open(tmp_path / "archive", Camera.LATISS)
    writing, go_on = threading.Event(), threading.Event()
    free_bytes = store.files.free_bytes

    def paused_free_bytes() -> int:  # the first step of a write: hold it there
        writing.set()
        go_on.wait(30)
        return free_bytes()

    store.files.free_bytes = paused_free_bytes  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as threads:
        written = threads.submit(store.write, pixels(), None, Provenance("tcp://daq", "test"))
        assert writing.wait(30)
        closed = threads.submit(store.close)
        with pytest.raises(FuturesTimeoutError):  # still waiting for the write (or broken)
            closed.result(0.5)
        go_on.set()
        row = written.result(30)
        closed.result(30)
    reopened, _ = ArchiveStore.open(tmp_path / "archive", Camera.LATISS)
    try:
        assert reopened.catalog.lookup(IMAGE, "R00_S00") == row
    finally:
        reopened.close()


def test_a_file_completed_with_its_header_replaces_its_row(tmp_path: Path) -> None:
    store, _ = ArchiveStore.open(tmp_path / "archive", Camera.LATISS)
    try:
        store.write(pixels(), None, Provenance("tcp://daq", "test"))
        announcement = header_document(tmp_path)
        from cscs.archiver.headers import fetch_header

        header = fetch_header(announcement.url, IMAGE, announcement, trusting(tmp_path))
        row = store.write(pixels(), header, Provenance("tcp://daq", "test"))
        assert row.header_complete
        assert store.files_of(IMAGE) == [row]
        assert store.without_header() == []
        assert verify_raw_file(Path(row.path), row.byte_size, row.checksum, "adler32") == []
    finally:
        store.close()


def test_a_full_archive_is_refused_before_writing_with_the_figures(tmp_path: Path) -> None:
    store, _ = ArchiveStore.open(tmp_path / "archive", Camera.LATISS, min_free_bytes=2**62)
    try:
        with pytest.raises(ArchiveUnwritableError, match=r"is full: .* GB free, min_free_bytes"):
            store.write(pixels(), None, Provenance("tcp://daq", "test"))
        assert list((tmp_path / "archive").rglob("*.fits*")) == []
        assert not store.is_archived(IMAGE, "R00_S00")
    finally:
        store.close()


@pytest.mark.parametrize(
    ("image", "sensor", "why"),
    [
        ("../../etc/passwd", "R00_S00", "not an image name"),
        (f"{IMAGE}\n", "R00_S00", "not an image name"),
        ("AT_O_2026112_000001", "R00_S00", "not an image name"),
        ("CC_O_20261121_000001", "R00_S00", "is not a LATISS image"),
        (IMAGE, "../../x", "not a detector name"),
        (IMAGE, "R22_S11", "LATISS has no detector R22_S11"),
    ],
)
def test_no_name_leads_outside_the_archive(
    tmp_path: Path, image: str, sensor: str, why: str
) -> None:
    store, _ = ArchiveStore.open(tmp_path / "archive", Camera.LATISS)
    try:
        with pytest.raises(ValueError, match=why):
            store.path(image, sensor)
    finally:
        store.close()


def test_temporaries_a_crash_left_are_removed_at_open(tmp_path: Path) -> None:
    crashed = tmp_path / "archive/LATISS/20261121" / IMAGE / f".{IMAGE}_R00_S00.fits.1.ab.partial"
    crashed.parent.mkdir(parents=True)
    crashed.write_bytes(b"half a file")
    store, stale = ArchiveStore.open(tmp_path / "archive", Camera.LATISS)
    store.close()
    assert stale == 1
    assert not crashed.exists()


# ---- the catch-up planner -------------------------------------------------------------------


def info(name: str, sensors: tuple[str, ...], *, missing: tuple[str, ...] = (),
         complete: bool = True) -> ImageInfo:  # fmt: skip
    return ImageInfo(name, sensors, missing, complete, 0, {})


def test_catch_up_takes_what_the_catalog_lacks_oldest_first() -> None:
    raft = ("R22_S00", "R22_S01", "R22_S02")
    images = [
        info("CC_O_20261121_000001", raft),
        info("CC_O_20261121_000002", raft, missing=("R22_S01",)),  # never read out
        info("CC_O_20261121_000003", raft, complete=False),  # still being read out
        info("CC_O_20261121_000004", raft),
    ]
    archived = {"CC_O_20261121_000001": {"R22_S00", "R22_S02"}, "CC_O_20261121_000004": set(raft)}
    assert plan_catch_up(images, archived) == [
        ("CC_O_20261121_000001", "R22_S01"),
        ("CC_O_20261121_000002", "R22_S00"),
        ("CC_O_20261121_000002", "R22_S02"),
    ]


def test_nothing_to_catch_up_is_an_empty_plan() -> None:
    assert plan_catch_up([], {}) == []
    done = info("AT_O_20261121_000001", ("R00_S00",))
    assert plan_catch_up([done], {"AT_O_20261121_000001": {"R00_S00"}}) == []


def test_catch_up_waits_for_the_header_of_an_image_just_read_out_as_its_endreadout_would() -> None:
    def closed(at: object) -> ImageInfo:
        return ImageInfo("AT_O_20261121_000001", ("R00_S00",), (), True, 0, {"dateEnd": at})

    assert header_wait(closed(1000.0), now_tai=1005.0, header_timeout=30.0) == 30.0
    assert header_wait(closed(1000.0), now_tai=1030.0, header_timeout=30.0) == 0.0  # past
    for absurd in (None, "soon", True, float("nan"), 2000.0):  # missing, junk, future
        assert header_wait(closed(absurd), now_tai=1005.0, header_timeout=30.0) == 0.0


async def test_periodic_catch_up_waits_anew_when_reconfigured_and_outlives_a_bug() -> None:
    """A pass not due is skipped; a new configuration restarts the wait with its own
    interval; a pass that fails unexpectedly is logged and the next one still comes."""
    reconfigured = asyncio.Event()
    interval, due, passes, second = 0.01, False, 0, asyncio.Event()

    async def catch_up() -> None:
        nonlocal passes
        passes += 1
        if passes == 1:
            raise RuntimeError("a deliberate bug")
        second.set()

    with structlog.testing.capture_logs() as logs:
        loop = asyncio.create_task(
            catch_up_periodically(lambda: interval, reconfigured, lambda: due, catch_up, LOG)
        )
        try:
            await asyncio.sleep(0.1)  # ten intervals, none due
            interval = 3600.0
            reconfigured.set()
            await asyncio.sleep(0.05)  # now waiting out the hour
            due = True
            await asyncio.sleep(0.05)
            assert passes == 0
            interval = 0.01
            reconfigured.set()
            await asyncio.wait_for(second.wait(), 10.0)
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
    errors = [entry["event"] for entry in logs if entry["log_level"] == "error"]
    assert errors == ["a catch-up pass failed unexpectedly"]


# ---- the CSC around them --------------------------------------------------------------------


async def test_a_job_that_fails_unexpectedly_is_logged_with_its_traceback(tmp_path: Path) -> None:
    """A bug in an archive job must show: a logMessage at ERROR with the traceback,
    never an exception nobody retrieves."""
    settings = Settings(state_dir=tmp_path)
    async with (
        make_csc(ArchiverCsc, MemoryBroker(), index=1, settings=settings) as h,
        h.remote.events(g.LOG_MESSAGE) as logs,
    ):
        archiver = h.csc
        assert isinstance(archiver, ArchiverCsc)

        async def broken() -> None:
            raise RuntimeError("a deliberate bug")

        archiver.jobs.spawn(broken(), "broken")
        record = await logs.wait_for(lambda r: "failed unexpectedly" in r.data.message)
    assert record.data.level == 40
    assert "RuntimeError: a deliberate bug" in record.data.traceback


async def test_the_archiver_wired_offline_archives_an_image_with_its_header(
    tmp_path: Path,
) -> None:
    """The whole CSC on the in-memory bus with a fake DAQ: the camera's DAQ followed from
    daqAvailable, an endReadout naming another camera's image dropped with a log, and an
    image announced as the ICD writes it (no missingKeywords) archived whole, with its
    header, and recorded."""
    broker = MemoryBroker()
    daq = FakeDaq([])
    opened: list[str] = []

    async def open_fake(url: str, timeout: float, stall_timeout: float) -> FakeDaq:
        opened.append(url)
        return daq

    camera = CscAddress("Camera", 1)
    header_service = CscAddress("HeaderService", 1)
    # Where the header service writes, as the archiver is configured to find it.
    headers = tmp_path / "headers" / "HeaderService-1"
    announcement = header_document(headers / "20261121").model_dump(exclude={"missingKeywords"})
    end = {"imageName": IMAGE, "imageIndex": 1, "imagesInSequence": 1,
           "requestedExposureTime": 0.0, "timestampEndOfReadout": 1.795e9,
           "sensors": "R00_S00"}  # fmt: skip
    settings = Settings(state_dir=tmp_path, config_dir=config_dir(tmp_path, {}, headers))
    async with (
        make_csc(ArchiverCsc, broker, index=1, settings=settings, open_daq=open_fake) as h,
        broker.transport() as bus,
        h.remote.stream() as events,
    ):
        daq_available = encode({"url": "fake://daq,other", "capacityBytes": 1})
        await bus.publish(camera.event("daqAvailable"), daq_available, retain=True)
        await h.remote.command("start", {"configurationOverride": "test"})
        await h.remote.command("enable")
        await bus.publish(header_service.event("largeFileObjectAvailable"), encode(announcement))
        other = end | {"imageName": "CC_O_20261121_000007"}  # ComCam's, not LATISS's
        await bus.publish(camera.event("endReadout"), encode(other))
        await bus.publish(camera.event("endReadout"), encode(end))
        dropped = await events.wait_for(
            lambda r: r.name == "logMessage" and "ignored an endReadout" in r.data["message"]
        )
        archived = (await events.wait_for(lambda r: r.name == "imageArchived")).data
    assert opened == ["fake://daq"]
    assert "is not a LATISS image" in dropped.data["message"]
    assert (archived["imageName"], archived["headerComplete"]) == (IMAGE, True)
    path = Path(archived["url"].removeprefix("file://"))
    assert verify_raw_file(path, archived["byteSize"], archived["checkSum"],
                           archived["checkSumAlgorithm"]) == []  # fmt: skip
    assert path.is_relative_to(tmp_path / "archive" / "LATISS")
    assert daq.reads == 1


def test_what_earlier_attempts_at_a_file_left_is_removed_and_nothing_else(
    tmp_path: Path,
) -> None:
    """Once a file is whole under its name, the temporaries of earlier attempts at it
    (a Dask worker killed mid-write) go; another file's, and names that only look
    alike, stay."""
    from cscs.archiver.writer import remove_partials_of
    from cscs.camera.files import temporary_name

    path = tmp_path / "CC_O_20261121_000001_R22_S11.fits"
    other = tmp_path / "CC_O_20261121_000001_R22_S12.fits"
    left = [temporary_name(path), temporary_name(path)]
    kept = [temporary_name(other), tmp_path / f".{path.name}.partial",
            tmp_path / f"{path.name}.1.2.partial", path]  # fmt: skip
    for file in left + kept:
        file.write_bytes(b"x")
    assert remove_partials_of(path) == 2
    assert sorted(tmp_path.iterdir()) == sorted(kept)
