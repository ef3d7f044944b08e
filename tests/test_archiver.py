"""The Archiver end to end on Mosquitto: camera + DAQ + header service + archiver.

Every archived file is checked by the project's verifier (size, MD5, FITS checksums,
segments) and here its keywords and geometry too, and its MD5 compared with the event
and the catalog. Each fault ends with every image archived exactly once and verified.
(The archiver's parts are tested offline in ``test_archiver_parts.py``.)

One broker is enough: what differs between brokers is tested where the broker is the
subject (``test_bus.py``, ``test_every_csc.py``), and nothing here is. A fault needs
only as many sensors as it is about: LATISS's one, or a few of ComCam's where it matters
that an image has several; ComCam's nine are archived end to end once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from astropy.io import fits

from cscs.archiver.csc import ArchiverCsc
from cscs.archiver.interface import ERROR_ARCHIVE_UNWRITABLE, ERROR_DAQ_UNREACHABLE
from cscs.camera.events import (
    END_OF_IMAGE_TELEMETRY,
    START_INTEGRATION,
    EndOfImageTelemetry,
    StartIntegration,
)
from cscs.camera.geometry import SEGMENTS, Camera
from cscs.camera.verify import verify_raw_file
from cscs.catalog import Catalog, sqlite_url
from cscs.core.broker import EmbeddedBroker
from cscs.core.protocol import encode
from cscs.core.remote import EventStream
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.testing import make_csc
from sim.testkit import Observatory, observatory
from tests.support.headers import rendered_header

pytestmark = pytest.mark.broker

BIAS = {"expTime": 0.0, "shutter": False, "imageType": "BIAS"}
OBJECT = {"expTime": 0.2, "shutter": True, "imageType": "OBJECT"}


async def archived(events: EventStream, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The next ``count`` imageArchived events."""
    return [(await events.wait_for(lambda r: r.name == "imageArchived", timeout)).data
            for _ in range(count)]  # fmt: skip


async def exposure_of(camera_events: EventStream) -> tuple[StartIntegration, EndOfImageTelemetry]:
    """The next image's startIntegration and endOfImageTelemetry, as the camera said them."""
    start: StartIntegration | None = None
    end: EndOfImageTelemetry | None = None
    while start is None or end is None:
        event = await camera_events.next(30)
        if event.name == START_INTEGRATION.name:
            start = event.parse(START_INTEGRATION).data
        elif event.name == END_OF_IMAGE_TELEMETRY.name:
            end = event.parse(END_OF_IMAGE_TELEMETRY).data
    return start, end


async def announce_late_header(
    obs: Observatory, tmp_path: Path, start: StartIntegration, end: EndOfImageTelemetry
) -> Path:
    """The image's header turning up late: made with the header service's own code,
    written in a directory the archiver trusts (docs/security.md), announced as the
    header service would. Its path."""
    document = rendered_header(Camera.LATISS, start, end, ["R00_S00"])
    path = tmp_path / "state1" / "headers" / "HeaderService-1" / "late-header.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(document.data)
    late = {"id": start.imageName, "url": path.as_uri(), "byteSize": len(document.data),
            "checkSum": document.md5, "mimeType": "application/yaml",
            "generator": "HeaderService:1", "version": "test", "missingKeywords": "",
            "seq": 1, "sent_tai": 0.0}  # fmt: skip
    await obs.header.bus.publish(
        obs.header.remote.address.event("largeFileObjectAvailable"), encode(late), qos=1
    )
    return path


async def outcomes(
    events: EventStream, *, archived: int, failed: int, timeout: float = 60
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """imageArchived and imageRetrievalFailed events, in whatever order they come."""
    done: dict[str, list[dict[str, Any]]] = {"imageArchived": [], "imageRetrievalFailed": []}
    while len(done["imageArchived"]) < archived or len(done["imageRetrievalFailed"]) < failed:
        event = await events.next(timeout)
        if event.name in done:
            done[event.name].append(event.data)
    return done["imageArchived"], done["imageRetrievalFailed"]


def verify(event: dict[str, Any], catalog: Catalog, *, header: bool = True) -> None:
    """The file is whole: FITS checksums, keywords, geometry, file checksum (and its
    algorithm) = event = catalog."""
    path = Path(urlparse(event["url"]).path)
    assert verify_raw_file(path, event["byteSize"], event["checkSum"],
                           event["checkSumAlgorithm"]) == []  # fmt: skip
    row = catalog.lookup(event["imageName"], event["sensor"])
    assert row is not None
    assert (row.checksum, row.checksum_algorithm, row.byte_size, row.path) == (
        event["checkSum"],
        event["checkSumAlgorithm"],
        event["byteSize"],
        str(path),
    )
    assert row.header_complete is header
    raft, slot = event["sensor"].split("_")
    assert path.name == f"{event['imageName']}_{raft}_{slot}.fits"
    with fits.open(path, checksum=True) as hdus:  # a bad CHECKSUM/DATASUM warns: an error here
        primary = hdus[0].header
        assert "CHECKSUM" in primary
        assert primary["OBSID"] == event["imageName"]
        assert (primary["RAFTBAY"], primary["CCDSLOT"]) == (raft, slot)
        if header:
            assert primary["DAYOBS"] == event["imageName"].split("_")[2]
            assert primary["TIMESYS"] == "TAI"
            assert isinstance(primary["AIRMASS"], float) or primary["IMGTYPE"] != "OBJECT"
        assert [h.header["EXTNAME"] for h in hdus[1:]] == [s.name for s in SEGMENTS]
        for hdu, segment in zip(hdus[1:], SEGMENTS, strict=True):
            expected = segment.keywords()
            assert {k: hdu.header[k] for k in expected} == expected
            assert hdu.data.shape == (2048, 576)
            assert "DATASUM" in hdu.header


@contextlib.contextmanager
def opened_catalog(obs: Observatory) -> Iterator[Catalog]:
    catalog = Catalog(sqlite_url(obs.archive / "catalog.sqlite"))
    try:
        yield catalog
    finally:
        catalog.close()


def verify_all(obs: Observatory, files: list[dict[str, Any]], count: int) -> None:
    """The catalog holds exactly ``count`` files, and each of ``files`` is whole."""
    with opened_catalog(obs) as catalog:
        assert catalog.count() == count
        for event in files:
            verify(event, catalog)


def no_partial_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".partial")]


async def test_end_to_end_latiss_and_comcam(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    prefix = f"a{index}"
    async with (
        observatory(mosquitto, prefix, tmp_path, index=1) as latiss,
        observatory(mosquitto, prefix, tmp_path, index=2, weather=False) as comcam,
        latiss.archiver.remote.stream() as latiss_events,
        comcam.archiver.remote.stream() as comcam_events,
    ):
        await latiss.camera.remote.command("takeImages", {"numImages": 5, **OBJECT}, timeout=60)
        await comcam.camera.remote.command("takeImages", {"numImages": 1, **OBJECT}, timeout=60)
        latiss_files = await archived(latiss_events, 5)
        comcam_files = await archived(comcam_events, 9)
    for obs, files, count in ((latiss, latiss_files, 5), (comcam, comcam_files, 9)):
        assert len({(f["imageName"], f["sensor"]) for f in files}) == count
        assert all(f["headerComplete"] for f in files), files
        verify_all(obs, files, count)
        assert no_partial_files(obs.archive)


async def test_a_corrupt_then_good_stream_is_retried(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """One read arrives corrupt, one stalls: each is retried (the archiver says so, naming
    the cause), and both images are archived whole, with no imageRetrievalFailed."""
    async with (
        observatory(mosquitto, f"a{index}", tmp_path, archiver={"read_attempts": 3}) as obs,
        obs.archiver.remote.stream() as events,
    ):
        await obs.camera.remote.command("injectFault", {"kind": "corrupt", "count": 1})
        await obs.camera.remote.command("injectFault", {"kind": "drop", "count": 1})
        await obs.camera.remote.command("takeImages", {"numImages": 2, **BIAS}, timeout=60)
        seen: list[str] = []
        files: list[dict[str, Any]] = []
        while len(files) < 2 or len(seen) < 2:  # logMessage may trail imageArchived
            event = await events.next(60)
            assert event.name != "imageRetrievalFailed", event.data
            if event.name == "imageArchived":
                files.append(event.data)
            elif event.name == "logMessage" and "retrying" in event.data["message"]:
                seen.append(event.data["message"])
    assert len(seen) == 2, seen
    assert any("is corrupt: data sum" in m for m in seen), seen
    assert any("pixels did not follow" in m for m in seen), seen
    verify_all(obs, files, 2)


async def test_a_sensor_that_keeps_failing_is_reported_then_caught_up(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """One sensor of an image keeps failing: the others are archived, the event names
    that one alone, and catch-up archives it (once) when the DAQ serves it again."""
    sensors = {"sensors": ["R22_S10", "R22_S11", "R22_S12"]}  # of ComCam's nine
    async with (
        observatory(mosquitto, f"a{index}", tmp_path, index=2, camera=sensors) as obs,
        obs.archiver.remote.stream() as events,
    ):
        await obs.camera.remote.command(
            "injectFault", {"kind": "corrupt", "sensor": "R22_S11", "count": 0}
        )
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        files, failures = await outcomes(events, archived=2, failed=1)
        assert failures[0]["sensor"] == "R22_S11"
        assert "segment Segment07 is corrupt" in failures[0]["description"]
        await obs.camera.remote.command("clearFaults")
        ack = await obs.archiver.remote.command("catchUp", timeout=60)
        assert "catch-up archived 1 file(s)" in ack.result
        files += await archived(events, 1)
        again = await obs.archiver.remote.command("catchUp", timeout=60)
        assert "catch-up archived 0 file(s)" in again.result  # never twice
    assert {f["sensor"] for f in files} == set(sensors["sensors"])
    verify_all(obs, files, 3)


async def test_duplicate_end_readout_is_idempotent(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    async with (
        observatory(mosquitto, f"a{index}", tmp_path) as obs,
        obs.archiver.remote.stream() as events,
        obs.camera.remote.stream("endReadout") as ends,
    ):
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        end = (await ends.next(30)).data
        first = await archived(events, 1)
        for _ in range(3):  # the same endReadout, again
            await obs.camera.bus.publish(
                obs.camera.remote.address.event("endReadout"), encode(end), qos=1
            )
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        second = await archived(events, 1)
    assert second[0]["imageName"] != first[0]["imageName"]  # no repeat came in between
    with opened_catalog(obs) as catalog:
        assert catalog.count() == 2


async def test_images_taken_while_the_archiver_was_away_are_caught_up_at_enable(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    async with (
        # one sensor at a time, so that the order files are done in is the order begun
        observatory(
            mosquitto,
            f"a{index}",
            tmp_path,
            enable_archiver=False,
            archiver={"sensors_in_flight": 1},
        ) as obs,  # fmt: skip
        obs.archiver.remote.stream() as events,
    ):
        await obs.camera.remote.command("takeImages", {"numImages": 3, **BIAS}, timeout=60)
        await obs.archiver.remote.command("enable")  # a restart: catch-up runs at enable
        files = await archived(events, 3)
    names = [f["imageName"] for f in files]
    assert names == sorted(names)  # oldest first
    verify_all(obs, files, 3)


async def recover(obs: Observatory, events: EventStream, files: int, **settings: Any) -> None:
    """standby, start with what was wrong put right, enable: catch-up archives the rest;
    then every file is verified and archived exactly once."""
    await obs.archiver.remote.command("standby")
    override = obs.archiver_override("recovered", **settings)
    await obs.archiver.remote.command("start", {"configurationOverride": override})
    await obs.archiver.remote.command("enable")
    recovered = await archived(events, files)
    verify_all(obs, recovered, files)
    assert no_partial_files(obs.archive)


async def test_a_full_disk_is_a_fault_and_leaves_no_partial_file(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    async with (
        observatory(mosquitto, f"a{index}", tmp_path, archiver={"min_free_bytes": 2**62}) as obs,
        obs.archiver.remote.stream() as events,
    ):
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        error = (await events.wait_for(
            lambda r: r.name == "errorCode" and r.data["errorCode"] != 0, 60)).data  # fmt: skip
        await obs.archiver.remote.wait_for_state(State.FAULT)
        assert error["errorCode"] == ERROR_ARCHIVE_UNWRITABLE
        assert "is full" in error["errorReport"]
        assert not list(obs.archive.rglob("*.fits"))
        assert no_partial_files(obs.archive)
        await recover(obs, events, 1, min_free_bytes=0)  # space was made


async def test_an_unreachable_daq_ends_in_fault(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    dead = f"ipc://{tmp_path}/no-daq.sock"
    settings = {"daq_url": dead, "daq_timeout": 0.3, "daq_unreachable_fault_after": 0.5,
                "read_attempts": 4}  # fmt: skip
    async with (
        observatory(mosquitto, f"a{index}", tmp_path, archiver=settings) as obs,
        obs.archiver.remote.stream() as events,
    ):
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        error = (await events.wait_for(
            lambda r: r.name == "errorCode" and r.data["errorCode"] != 0, 60)).data  # fmt: skip
        await obs.archiver.remote.wait_for_state(State.FAULT)
        assert error["errorCode"] == ERROR_DAQ_UNREACHABLE
        assert dead in error["errorReport"]
        await recover(obs, events, 1, daq_url="")  # follow the camera's DAQ again


async def test_a_restart_mid_image_leaves_nothing_half_written(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """Two images of four sensors each, two sensors in flight: the archiver stops when
    the first file is archived, with others being written and the rest of both images
    not begun; started again, it finishes both, each file once and whole."""
    sensors = {"sensors": ["R22_S00", "R22_S01", "R22_S10", "R22_S11"]}  # of ComCam's nine
    async with (
        observatory(mosquitto, f"a{index}", tmp_path, index=2, enable_archiver=False,
                    archiver={"sensors_in_flight": 2}, camera=sensors) as obs,
        obs.archiver.remote.stream() as events,
    ):  # fmt: skip
        await obs.camera.remote.command("takeImages", {"numImages": 2, **BIAS}, timeout=60)
        await obs.archiver.remote.command("enable")
        await archived(events, 1)
        await obs.archiver.csc.close()  # the archiver dies with files being written
        settings = Settings(prefix=f"a{index}", state_dir=tmp_path, config_dir=obs.config_dir)
        async with make_csc(ArchiverCsc, mosquitto, index=2, settings=settings) as again:
            await again.remote.command("start", {"configurationOverride": "test"})
            await again.remote.command("enable")  # catch-up finishes the images
            with opened_catalog(obs) as catalog:
                while catalog.count() < 8:
                    await archived(events, 1)
                assert catalog.without_header() == []
                paths = sorted(obs.archive.rglob("*.fits"))
                assert len(paths) == 8
                for path in paths:
                    image = path.parent.name
                    row = catalog.lookup(image, path.stem.removeprefix(f"{image}_"))
                    assert row is not None
                    verify({"url": path.as_uri(), "byteSize": row.byte_size,
                            "checkSum": row.checksum,
                            "checkSumAlgorithm": row.checksum_algorithm, "imageName": image,
                            "sensor": row.sensor}, catalog)  # fmt: skip
    assert len(list(obs.archive.rglob("*.fits"))) == 8
    assert no_partial_files(obs.archive)


async def test_a_late_header_completes_the_file(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    async with (
        observatory(mosquitto, f"a{index}", tmp_path, archiver={"header_timeout": 0.2}) as obs,
        obs.archiver.remote.stream() as events,
        obs.camera.remote.stream() as camera_events,
    ):
        await obs.header.remote.command("disable")  # a header service outage
        await obs.camera.remote.command("takeImages", {"numImages": 1, **OBJECT}, timeout=60)
        first = (await archived(events, 1))[0]
        assert first["headerComplete"] is False
        assert first["statusCode"] == 1
        start, end = await exposure_of(camera_events)
        assert start.imageName == first["imageName"]
        path = await announce_late_header(obs, tmp_path, start, end)  # the header turns up
        completed = (await archived(events, 1))[0]
    assert completed["headerComplete"] is True
    assert completed["statusCode"] == 0
    assert (completed["imageName"], completed["sensor"]) == (first["imageName"], first["sensor"])
    verify_all(obs, [completed], 1)
    with opened_catalog(obs) as catalog:
        row = catalog.lookup(completed["imageName"], completed["sensor"])
    assert row is not None
    assert row.header_url == path.as_uri()


async def test_an_image_caught_up_just_after_its_readout_is_written_once_with_its_header(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """Catch-up finds an image the moment it is read out, before its header has come
    (the race of a catch-up pass and an endReadout): it waits for the header as the
    live path would, and the file is written once, with it, not headerless and then
    again."""
    async with (
        observatory(mosquitto, f"a{index}", tmp_path, enable_archiver=False,
                    archiver={"header_timeout": 60.0}) as obs,
        obs.archiver.remote.stream() as events,
        obs.camera.remote.stream() as camera_events,
    ):  # fmt: skip
        await obs.header.remote.command("disable")  # its header will come late, by hand
        await obs.camera.remote.command("takeImages", {"numImages": 1, **OBJECT}, timeout=60)
        start, end = await exposure_of(camera_events)
        await obs.archiver.remote.command("enable")  # its catch-up finds the image
        await events.wait_for(lambda e: e.name == "logMessage" and "catching up" in e.data.get(
            "message", ""), timeout=30)  # fmt: skip
        await announce_late_header(obs, tmp_path, start, end)
        first = (await archived(events, 1))[0]
    assert (first["imageName"], first["headerComplete"], first["statusCode"]) == (
        start.imageName, True, 0,
    )  # fmt: skip


@pytest.mark.long  # waits out a 20 s header timeout: the long tier keeps make test in 8 min
async def test_an_image_whose_header_is_late_does_not_hold_up_the_next(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """One sensor in flight: the first image's header never comes, the second's does.
    The second is archived, with its header, while the first still waits for its own."""
    settings = {"header_timeout": 20, "sensors_in_flight": 1}
    async with (
        observatory(mosquitto, f"a{index}", tmp_path, archiver=settings) as obs,
        obs.archiver.remote.stream() as events,
    ):
        await obs.header.remote.command("disable")  # the header service misses the first
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        await obs.header.remote.command("enable")
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        second, first = await archived(events, 2)
    assert second["imageName"] > first["imageName"]
    assert second["headerComplete"] is True
    assert first["headerComplete"] is False
    with opened_catalog(obs) as catalog:
        verify(second, catalog)
        verify(first, catalog, header=False)
