"""OODS:{index} on the in-memory bus, with small fakes of the repository and ConsDB
(tests/support/oods.py) and a real catalog: what it registers (only what the catalog
holds), when it says imageInOODS, refusals and outages retried with nothing lost,
reconciliation, ConsDB rows and quick-look QC.

The same CSC with the real libraries is tested in test_oods_stores.py; on Mosquitto
with a real archiver in test_oods_process.py."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cscs.catalog import BatchRecords, Catalog, sqlite_url
from cscs.core.protocol import encode
from cscs.core.remote import EventStream
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.testing import CscHarness, MemoryBroker, make_csc
from cscs.oods.csc import OodsCsc
from cscs.oods.interface import (
    ERROR_CONSDB_UNAVAILABLE,
    ERROR_REPOSITORY_UNAVAILABLE,
    OodsConfig,
)
from tests.support.oods import FakeConsDb, FakeRegistry, archive_file, catalogue, exposure_id_of

AT = "AT_O_20261121_000001"
CC = "CC_O_20261121_000007"
NINE = [f"R22_S{x}{y}" for x in range(3) for y in range(3)]
FAST = {"batch_delay": 0.05, "settle_delay": 0.5, "retry_initial": 0.05, "retry_max": 0.2}


def factory(registry: FakeRegistry, consdb: FakeConsDb) -> Any:
    def make(index: int, **kwargs: Any) -> OodsCsc:
        return OodsCsc(index, open_stores=lambda config, root: (registry, consdb), **kwargs)

    make.interface = OodsCsc.interface  # type: ignore[attr-defined]
    return make


@contextlib.asynccontextmanager
async def oods(
    tmp_path: Path,
    registry: FakeRegistry,
    consdb: FakeConsDb,
    index: int = 1,
    broker: MemoryBroker | None = None,
    **config: Any,
) -> AsyncIterator[tuple[CscHarness, EventStream]]:
    """The OODS started with ``config`` and enabled, and its imageInOODS heard from
    before it was enabled (its reconciliation at enable may say an image at once)."""
    settings = {"archive_root": str(tmp_path / "archive")} | FAST | config
    async with started(factory(registry, consdb), broker or MemoryBroker(), tmp_path,
                       settings, index) as announced:  # fmt: skip
        yield announced


@contextlib.asynccontextmanager
async def started(
    make: Any,
    broker: MemoryBroker,
    tmp_path: Path,
    config: dict[str, Any],
    index: int,
    heard: str = "imageInOODS",
) -> AsyncIterator[tuple[CscHarness, EventStream]]:
    """The OODS started and enabled, with a stream of its ``heard`` events (``#``: all)
    opened before."""
    configs = tmp_path / "config" / "OODS"
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "test.yaml").write_text(yaml.safe_dump(config))
    settings = Settings(prefix="oods", state_dir=tmp_path / "state", config_dir=configs.parent)
    async with (
        make_csc(make, broker, index=index, settings=settings) as harness,
        harness.remote.stream(heard) as events,
    ):
        await harness.remote.command("start", {"configurationOverride": "test"}, timeout=60)
        await harness.remote.command("enable")
        yield harness, events


async def archived(harness: CscHarness, image: str, sensor: str, **fields: Any) -> None:
    """What Archiver:{index} says (anyone can say it)."""
    index = harness.csc.address.index
    payload = {"imageName": image, "sensor": sensor, "url": "file:///x", "byteSize": 1,
               "checkSum": "0", "checkSumAlgorithm": "adler32", "headerComplete": True,
               "statusCode": 0, "description": "", "seq": 1, "sent_tai": 0.0} | fields  # fmt: skip
    topic = f"{harness.csc.address.prefix}/Archiver/{index}/evt/imageArchived"
    assert await harness.bus.publish(topic, encode(payload), qos=1)


async def read_out(harness: CscHarness, image: str, sensors: list[str]) -> None:
    index = harness.csc.address.index
    payload = {"imageName": image, "imageIndex": 0, "imagesInSequence": 1,
               "requestedExposureTime": 1.0, "timestampEndOfReadout": 0.0,
               "sensors": ",".join(sensors), "seq": 1, "sent_tai": 0.0}  # fmt: skip
    topic = f"{harness.csc.address.prefix}/Camera/{index}/evt/endReadout"
    assert await harness.bus.publish(topic, encode(payload), qos=1)


async def next_in_oods(events: EventStream, timeout: float = 10.0) -> dict[str, Any]:
    return (await events.next(timeout)).data


def csc(harness: CscHarness) -> OodsCsc:
    assert isinstance(harness.csc, OodsCsc)
    return harness.csc


def root(tmp_path: Path) -> Path:
    return tmp_path / "archive"


async def test_a_file_archived_is_registered_announced_and_in_consdb(tmp_path: Path) -> None:
    registry, consdb = FakeRegistry(), FakeConsDb()
    path = archive_file(root(tmp_path), AT, "R00_S00", header={"EXPTIME": 2.0})
    async with oods(tmp_path, registry, consdb) as (h, events):
        await read_out(h, AT, ["R00_S00"])
        await archived(h, AT, "R00_S00")
        said = await next_in_oods(events)
    assert said | {"seq": 0, "sent_tai": 0} == {
        "imageName": AT, "instrument": "LATISS", "exposureId": 2026112100001,
        "sensors": "R00_S00", "statusCode": 0, "description": "1 file(s) in the repository",
        "seq": 0, "sent_tai": 0,
    }  # fmt: skip
    assert set(registry.held) == {path.resolve()}
    assert consdb.images[AT]["R00_S00"]["EXPTIME"] == 2.0


async def test_a_comcam_image_is_announced_once_with_its_nine_files(tmp_path: Path) -> None:
    registry, consdb = FakeRegistry(), FakeConsDb()
    for sensor in NINE:
        archive_file(root(tmp_path), CC, sensor)
    async with oods(tmp_path, registry, consdb, index=2, settle_delay=60.0) as (h, events):
        await read_out(h, CC, NINE)
        for sensor in NINE:
            await archived(h, CC, sensor)
        said = await next_in_oods(events)
        assert said["sensors"] == ",".join(NINE)
        assert said["statusCode"] == 0
        assert said["exposureId"] == exposure_id_of(CC)
        with pytest.raises(TimeoutError):  # once only
            await events.next(0.5)
    assert len(registry.held) == 9
    assert len(consdb.images[CC]) == 9


async def test_only_what_the_catalog_holds_is_registered(tmp_path: Path) -> None:
    """imageArchived is a prompt: a file it names that the catalog lacks (a file put in
    the archive by hand, or no file at all) is not registered, whatever the message."""
    registry, consdb = FakeRegistry(), FakeConsDb()
    stray = root(tmp_path) / "LATISS" / "20261121" / "stray.fits"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not catalogued")
    async with oods(tmp_path, registry, consdb) as (h, events):
        await archived(h, AT, "R00_S00", url=stray.as_uri())
        with pytest.raises(TimeoutError):
            await events.next(1.0)
        assert h.csc.state is State.ENABLED
    assert registry.held == {}
    assert registry.calls == []


async def test_a_catalogued_path_outside_the_archive_is_refused_and_said(tmp_path: Path) -> None:
    registry, consdb = FakeRegistry(), FakeConsDb()
    outside = tmp_path / "elsewhere.fits"
    outside.write_bytes(b"x")
    catalogue(root(tmp_path), AT, "R00_S00", str(outside))
    async with oods(tmp_path, registry, consdb) as (h, events):
        await archived(h, AT, "R00_S00")
        said = await next_in_oods(events)
    assert said["statusCode"] == 1
    assert said["sensors"] == ""
    assert "R00_S00" in said["description"]
    assert "not inside the archive" in said["description"]
    assert registry.held == {}


async def test_a_refused_file_is_said_retried_and_said_again_once_in(tmp_path: Path) -> None:
    registry, consdb = FakeRegistry(), FakeConsDb()
    path = archive_file(root(tmp_path), AT, "R00_S00")
    registry.refuse[path.resolve()] = "no DAYOBS in its header"
    async with oods(tmp_path, registry, consdb) as (h, events):
        await read_out(h, AT, ["R00_S00"])
        await archived(h, AT, "R00_S00")
        refused = await next_in_oods(events)
        assert refused["statusCode"] == 1
        assert refused["sensors"] == ""
        assert "R00_S00: no DAYOBS in its header" in refused["description"]
        assert csc(h).status().refusedPending == 1
        registry.refuse.clear()  # the file is mended
        said = await next_in_oods(events)
    assert said["statusCode"] == 0
    assert said["sensors"] == "R00_S00"
    assert len(registry.calls) >= 2


async def test_a_repository_down_is_said_and_nothing_is_lost(tmp_path: Path) -> None:
    registry, consdb = FakeRegistry(), FakeConsDb()
    sensors = NINE[:3]
    for sensor in sensors:
        archive_file(root(tmp_path), CC, sensor)
    registry.down = "database is locked"
    async with (
        oods(tmp_path, registry, consdb, index=2) as (h, events),
        h.remote.stream("errorCode") as errors,
    ):
        await read_out(h, CC, sensors)
        for sensor in sensors:
            await archived(h, CC, sensor)
        error = (await errors.next()).data
        assert error["errorCode"] == ERROR_REPOSITORY_UNAVAILABLE
        assert "database is locked" in error["errorReport"]
        assert not csc(h).status().repositoryUp
        assert csc(h).status().queueDepth == 1
        assert h.csc.state is State.ENABLED
        registry.down = ""
        said = await next_in_oods(events)
    assert said["sensors"] == ",".join(sensors)
    assert said["statusCode"] == 0


async def test_a_header_completed_later_is_registered_again_and_said_again(
    tmp_path: Path,
) -> None:
    registry, consdb = FakeRegistry(), FakeConsDb()
    path = archive_file(root(tmp_path), AT, "R00_S00")
    async with oods(tmp_path, registry, consdb) as (h, events):
        await read_out(h, AT, ["R00_S00"])
        await archived(h, AT, "R00_S00", headerComplete=False, statusCode=1)
        await next_in_oods(events)
        archive_file(root(tmp_path), AT, "R00_S00", header={"FILTER": "r_03"})  # rewritten
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
        await archived(h, AT, "R00_S00")
        again = await next_in_oods(events)
    assert again["sensors"] == "R00_S00"
    assert again["statusCode"] == 0
    assert consdb.images[AT]["R00_S00"]["FILTER"] == "r_03"


async def test_enable_registers_what_the_catalog_holds_and_the_repository_lacks(
    tmp_path: Path,
) -> None:
    """Archived while no OODS ran: found at enable, oldest first, each image said."""
    registry, consdb = FakeRegistry(), FakeConsDb()
    images = [f"AT_O_20261121_{n:06d}" for n in range(1, 8)]
    for n, image in enumerate(images):
        archive_file(root(tmp_path), image, "R00_S00", tai=1.8e9 + n)
    registry.held[archive_file(root(tmp_path), "AT_O_20261120_000001", "R00_S00",
                               tai=1.7e9).resolve()] = 0.0  # fmt: skip
    async with oods(tmp_path, registry, consdb, reconcile_page=3) as (_h, events):
        said = [(await next_in_oods(events))["imageName"] for _ in images]
    assert said == images  # oldest first
    assert len(registry.held) == 8
    assert len(registry.calls) == 7  # the one already in was not registered again


async def test_a_reconnection_reconciles_the_last_days_of_the_catalog(tmp_path: Path) -> None:
    """imageArchived said while the OODS was cut off from the broker is lost to it: the
    catalog has those files, and the reconnection finds them (the last
    reconnect_look_back s of exposures: older ones wait for the next enable)."""
    registry, consdb, broker = FakeRegistry(), FakeConsDb(), MemoryBroker()
    async with oods(tmp_path, registry, consdb, broker=broker) as (h, _):
        broker.stop()
        recent = archive_file(root(tmp_path), AT, "R00_S00", tai=current_tai() - 3600)
        old = archive_file(root(tmp_path), "AT_O_20261101_000001", "R00_S00",
                           tai=current_tai() - 10 * 86400)  # fmt: skip
        async with h.remote.stream("imageInOODS") as events:
            broker.start()
            said = await next_in_oods(events, 30)
    assert said["imageName"] == AT
    assert set(registry.held) == {recent.resolve()}
    assert old.resolve() not in registry.held


async def test_hostile_prompts_register_nothing_and_change_nothing(tmp_path: Path) -> None:
    registry, consdb = FakeRegistry(), FakeConsDb()
    async with oods(tmp_path, registry, consdb) as (h, events):
        for image, sensor in [
            ("../../etc/passwd", "R00_S00"), (AT, "../../../etc"), ("x" * 100_000, "R00_S00"),
            (AT, "R00_S00," * 10_000), ("CC_O_20261121_000001", "R22_S11"),  # not LATISS's
            (AT, "R22_S11"), ("AT_O_20261121_000001\n", "R00_S00"),
        ]:  # fmt: skip
            await archived(h, image, sensor)
        topic = f"{h.csc.address.prefix}/Archiver/1/evt/imageArchived"
        for junk in [b"\xff", b"[]", b'{"imageName": 5}', json.dumps({"a": "b" * 10**6}).encode()]:
            await h.bus.publish(topic, junk, qos=1)
        with pytest.raises(TimeoutError):
            await events.next(1.0)
        assert h.csc.state is State.ENABLED
    assert registry.calls == []


async def test_consdb_down_is_said_retried_and_the_raws_registered_meanwhile(
    tmp_path: Path,
) -> None:
    registry, consdb = FakeRegistry(), FakeConsDb(down="ConsDB is down")
    async with (
        oods(tmp_path, registry, consdb) as (h, events),
        h.remote.stream("errorCode") as errors,
    ):
        archive_file(root(tmp_path), AT, "R00_S00")  # once errorCode is heard
        await read_out(h, AT, ["R00_S00"])
        await archived(h, AT, "R00_S00")
        assert (await next_in_oods(events))["statusCode"] == 0
        assert (await errors.next()).data["errorCode"] == ERROR_CONSDB_UNAVAILABLE
        assert csc(h).status().consDbPending == 1
        consdb.down = ""
        await wait_until(lambda: AT in consdb.images, h)
        await wait_until(lambda: csc(h).status().consDbPending == 0, h)


async def wait_until(condition: Callable[[], bool], h: CscHarness) -> None:
    """Until ``condition()``: checked at each of the CSC's status messages' pace (the
    heartbeat: something it says every second)."""
    async with h.remote.stream("heartbeat") as beats:
        while not condition():
            await beats.next(10.0)


async def test_quicklook_qc_heard_is_read_from_the_catalog_into_consdb(tmp_path: Path) -> None:
    registry, consdb = FakeRegistry(), FakeConsDb()
    archive_file(root(tmp_path), AT, "R00_S00")
    catalog = Catalog(sqlite_url(root(tmp_path) / "catalog.sqlite"))
    metrics = {"imageName": AT, "sensor": "R00_S00", "psfFwhm": 1.1, "skyMean": 100.0,
               "skyRms": 5.0, "nSources": 10, "nPsfStars": 5, "zeroPoint": 28.0}  # fmt: skip
    async with oods(tmp_path, registry, consdb) as (h, _):
        BatchRecords(catalog).record_qc("job-1", metrics, 1.8e9)
        prefix = "dm/qc/LATISS"
        # The values are the catalog's: whatever the message says.
        await h.bus.publish(f"{prefix}/{AT}", encode({"psfFwhm": 99.0}), qos=1)
        await h.bus.publish(f"{prefix}/../x", b"{}", qos=1)
        await h.bus.publish(f"dm/qc/LSSTComCam/{CC}", b"{}", qos=1)
        await wait_until(lambda: AT in consdb.quicklook, h)
    catalog.close()
    assert consdb.quicklook[AT]["R00_S00"]["psfFwhm"] == 1.1
    assert set(consdb.quicklook) == {AT}


async def test_quicklook_measured_while_away_is_caught_up_at_enable(tmp_path: Path) -> None:
    registry, consdb = FakeRegistry(), FakeConsDb()
    archive_file(root(tmp_path), AT, "R00_S00")
    catalog = Catalog(sqlite_url(root(tmp_path) / "catalog.sqlite"))
    metrics = {"imageName": AT, "sensor": "R00_S00", "psfFwhm": 1.2, "skyMean": 100.0,
               "skyRms": 5.0, "nSources": 10, "nPsfStars": 5, "zeroPoint": 28.0}  # fmt: skip
    BatchRecords(catalog).record_qc("job-1", metrics, current_tai() - 60)
    catalog.close()
    async with oods(tmp_path, registry, consdb) as (h, _):
        await wait_until(lambda: AT in consdb.quicklook, h)


def test_the_shipped_configuration_is_valid_and_a_bad_one_names_its_fault() -> None:
    assert OodsConfig().settle_delay > OodsConfig().batch_delay
    with pytest.raises(ValueError, match=r"retry_max \(5 s\) is below retry_initial"):
        OodsConfig(retry_initial=10.0, retry_max=5.0)
