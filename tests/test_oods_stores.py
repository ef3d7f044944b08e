"""OODS:{index} with the real repository and ConsDB on SQLite, on the in-memory bus:
what it registers is what the Butler finds, ConsDB gets one exposure row per image, a
header completed later updates both, a registry locked or failing then back loses
nothing, a restart reconciles what was archived meanwhile, and quick-look QC heard is
recorded from the catalog."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cscs.camera.geometry import Camera
from cscs.catalog import BatchRecords, Catalog, sqlite_url
from cscs.consdb import ConsDb
from cscs.core.protocol import encode
from cscs.core.remote import EventStream
from cscs.core.testing import CscHarness, MemoryBroker
from cscs.oods.csc import OodsCsc
from cscs.oods.interface import OodsConfig
from cscs.oods.ports import ConsDbPort, RegistryPort, RegistryResult, StoreUnavailableError
from cscs.oods.stores import open_stores
from cscs.repository import Repository
from tests.conftest import postgres_database
from tests.support.oods import catalogue
from tests.support.raws import archive_image, start_tai
from tests.test_oods import started

AT = "AT_O_20261121_000001"
CC = "CC_O_20261121_000002"
FAST = {"batch_delay": 0.05, "settle_delay": 1.0, "retry_initial": 0.05, "retry_max": 0.2}


def archived_and_catalogued(root: Path, camera: Camera, image: str, **kwargs: Any) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = archive_image(root, camera, image, **kwargs)
    for path in paths:
        catalogue(root, image, "_".join(path.stem.split("_")[-2:]), str(path),
                  tai=start_tai(image))  # fmt: skip
    return paths


def factory(opener: Callable[..., Any]) -> Any:
    def make(index: int, **kwargs: Any) -> OodsCsc:
        return OodsCsc(index, open_stores=opener, **kwargs)

    make.interface = OodsCsc.interface  # type: ignore[attr-defined]
    return make


@contextlib.asynccontextmanager
async def oods(
    tmp_path: Path, camera: Camera, opener: Callable[..., Any] = open_stores, **config: Any
) -> AsyncIterator[tuple[CscHarness, EventStream]]:
    settings = {"archive_root": str(tmp_path / "archive")} | FAST | config
    async with started(factory(opener), MemoryBroker(), tmp_path, settings,
                       camera.value) as announced:  # fmt: skip
        yield announced


async def say_archived(h: CscHarness, image: str, sensors: Iterable[str]) -> None:
    address = h.csc.address
    for sensor in sensors:
        payload = {"imageName": image, "sensor": sensor, "url": "file:///x", "byteSize": 1,
                   "checkSum": "0", "headerComplete": True, "statusCode": 0,
                   "description": "", "seq": 1, "sent_tai": 0.0}  # fmt: skip
        topic = f"{address.prefix}/Archiver/{address.index}/evt/imageArchived"
        assert await h.bus.publish(topic, encode(payload), qos=1)


async def say_read_out(h: CscHarness, image: str, sensors: Sequence[str]) -> None:
    address = h.csc.address
    payload = {"imageName": image, "imageIndex": 0, "imagesInSequence": 1,
               "requestedExposureTime": 1.0, "timestampEndOfReadout": 0.0,
               "sensors": ",".join(sensors), "seq": 1, "sent_tai": 0.0}  # fmt: skip
    topic = f"{address.prefix}/Camera/{address.index}/evt/endReadout"
    assert await h.bus.publish(topic, encode(payload), qos=1)


def raws(root: Path) -> list[tuple[Any, Any, Any]]:
    repo = Repository.open(root)
    try:
        refs = repo.butler.query_datasets("raw", collections="*", find_first=False,
                                          explain=False)  # fmt: skip
        return sorted((r.dataId["instrument"], r.dataId["exposure"], r.dataId["detector"])
                      for r in refs)  # fmt: skip
    finally:
        repo.close()


def consdb_rows(root: Path, instrument: str, table: str) -> list[dict[str, Any]]:
    db = ConsDb.open(archive_root=root)
    try:
        with db.engine(instrument).connect() as connection:
            result = connection.execute(sa.select(db.table(instrument, table)))
            return [dict(row._asdict()) for row in result]
    finally:
        db.close()


async def test_a_comcam_image_is_in_the_butler_and_in_consdb_once_said(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    paths = archived_and_catalogued(root, Camera.COMCAM, CC)
    sensors = ["_".join(p.stem.split("_")[-2:]) for p in paths]
    async with oods(tmp_path, Camera.COMCAM) as (h, events):
        await say_read_out(h, CC, sensors)
        await say_archived(h, CC, sensors)
        said = (await events.next(60)).data
    assert said["statusCode"] == 0
    assert said["sensors"] == ",".join(sorted(sensors))
    assert said["exposureId"] == 2026112100002
    assert raws(root) == [("LSSTComCam", 2026112100002, n) for n in range(9)]
    [exposure] = consdb_rows(root, "LSSTComCam", "exposure")
    assert exposure["exposure_name"] == CC
    assert len(consdb_rows(root, "LSSTComCam", "ccdexposure")) == 9


async def test_a_header_completed_later_updates_the_butler_and_consdb(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    archived_and_catalogued(root, Camera.LATISS, AT, header=False)
    async with oods(tmp_path, Camera.LATISS) as (h, events):
        await say_read_out(h, AT, ["R00_S00"])
        await say_archived(h, AT, ["R00_S00"])
        await events.next(60)
        [before] = consdb_rows(root, "LATISS", "exposure")
        archived_and_catalogued(root, Camera.LATISS, AT, image_type="BIAS")  # rewritten
        await say_archived(h, AT, ["R00_S00"])
        again = (await events.next(60)).data
    assert again["statusCode"] == 0
    [after] = consdb_rows(root, "LATISS", "exposure")
    assert before["img_type"] != after["img_type"]
    assert str(after["img_type"]).lower() == "bias"
    assert raws(root) == [("LATISS", 2026112100001, 0)]


async def test_a_registry_locked_for_a_while_loses_nothing(tmp_path: Path) -> None:
    """Another process holds the registry's SQLite database: registration waits (the
    Butler's busy timeout), then goes on; every file is registered once."""
    root = tmp_path / "archive"
    Repository.open(root).close()
    paths = archived_and_catalogued(root, Camera.COMCAM, CC, sensors=["R22_S00", "R22_S11"])
    async with oods(tmp_path, Camera.COMCAM) as (h, events):
        locker = sqlite3.connect(root / "butler.sqlite3", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            await say_read_out(h, CC, ["R22_S00", "R22_S11"])
            await say_archived(h, CC, ["R22_S00", "R22_S11"])
            await until(h, lambda: oods_csc(h).work.ledger.queue_depth == 1)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        said = (await events.next(60)).data
    assert said["sensors"] == "R22_S00,R22_S11"
    assert len(raws(root)) == len(paths)


class Failing:
    """The real repository, failing as the library does when its database is down
    (RepositoryError: StoreUnavailableError here) while ``down`` is set."""

    def __init__(self, inner: RegistryPort) -> None:
        self.inner = inner
        self.down = "cannot register raws: the database is down"
        self.failures = 0

    def _check(self) -> None:
        if self.down:
            self.failures += 1
            raise StoreUnavailableError(self.down)

    def register(self, paths: Sequence[Path]) -> RegistryResult:
        self._check()
        return self.inner.register(paths)

    def registered(self, paths: Iterable[Path]) -> set[Path]:
        self._check()
        return self.inner.registered(paths)

    def exposure_id(self, image: str) -> int:
        return self.inner.exposure_id(image)

    def header(self, path: Path) -> Any:
        return self.inner.header(path)

    def close(self) -> None:
        self.inner.close()


async def test_a_registry_down_then_back_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    failing: list[Failing] = []

    def opener(config: OodsConfig, where: Path) -> tuple[RegistryPort, ConsDbPort]:
        registry, consdb = open_stores(config, where)
        failing.append(Failing(registry))
        return failing[-1], consdb

    images = [f"AT_O_20261121_{n:06d}" for n in range(1, 4)]
    for image in images[:2]:
        archived_and_catalogued(root, Camera.LATISS, image)  # while no OODS ran
    async with (
        oods(tmp_path, Camera.LATISS, opener) as (h, events),
        h.remote.stream("errorCode") as errors,
    ):
        archived_and_catalogued(root, Camera.LATISS, images[2])
        await say_read_out(h, images[2], ["R00_S00"])
        await say_archived(h, images[2], ["R00_S00"])
        assert "database is down" in (await errors.next(30)).data["errorReport"]
        await until(h, lambda: failing[0].failures >= 3)  # retried, with back-off
        failing[0].down = ""
        said = {(await events.next(60)).data["imageName"] for _ in images}
    assert said == set(images)
    assert [n for _, n, _ in raws(root)] == [2026112100001, 2026112100002, 2026112100003]


async def test_a_restart_reconciles_what_was_archived_meanwhile(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    archived_and_catalogued(root, Camera.LATISS, AT)
    async with oods(tmp_path, Camera.LATISS) as (_h, events):
        assert (await events.next(60)).data["imageName"] == AT
    later = "AT_O_20261121_000002"
    archived_and_catalogued(root, Camera.LATISS, later)
    async with oods(tmp_path, Camera.LATISS) as (_h, events):
        assert (await events.next(60)).data["imageName"] == later
    assert [n for _, n, _ in raws(root)] == [2026112100001, 2026112100002]
    assert len(consdb_rows(root, "LATISS", "exposure")) == 2


async def test_quicklook_qc_heard_goes_from_the_catalog_to_consdb(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    archived_and_catalogued(root, Camera.LATISS, AT)
    async with oods(tmp_path, Camera.LATISS) as (h, events):
        await events.next(60)
        catalog = Catalog(sqlite_url(root / "catalog.sqlite"))
        metrics = {"imageName": AT, "sensor": "R00_S00", "psfFwhm": 1.0, "skyMean": 100.0,
                   "skyRms": 5.0, "nSources": 10, "nPsfStars": 5, "zeroPoint": 28.0}  # fmt: skip
        BatchRecords(catalog).record_qc("job-1", metrics, start_tai(AT) + 100)
        catalog.close()
        await h.bus.publish(f"dm/qc/LATISS/{AT}", encode({"imageName": AT}), qos=1)
        await until(h, lambda: bool(consdb_rows(root, "LATISS", "visit1_quicklook")))
    [row] = consdb_rows(root, "LATISS", "visit1_quicklook")
    assert row["psf_sigma"] is not None


def oods_csc(h: CscHarness) -> OodsCsc:
    assert isinstance(h.csc, OodsCsc)
    return h.csc


async def until(h: CscHarness, condition: Callable[[], bool]) -> None:
    """Until ``condition()``, looked at on each of the CSC's heartbeats (every second)."""
    stream: EventStream
    async with h.remote.stream("heartbeat") as stream:
        while not condition():
            await stream.next(30)


@pytest.mark.broker  # a PostgreSQL server of the tests' own: the system tier
async def test_registry_and_consdb_on_postgresql(postgres_admin: str, tmp_path: Path) -> None:
    """As a site with several cameras configures it: the archive's catalog where the
    archiver keeps it, the registry and ConsDB in one PostgreSQL database."""
    root = tmp_path / "archive"
    paths = archived_and_catalogued(root, Camera.COMCAM, CC)
    sensors = ["_".join(p.stem.split("_")[-2:]) for p in paths]
    with postgres_database(postgres_admin) as url:
        database = "postgresql://" + url.partition("://")[2]
        async with (
            oods(tmp_path, Camera.COMCAM, registry_url=database, consdb_url=database) as (
                h,
                events,
            ),
        ):
            await say_read_out(h, CC, sensors)
            await say_archived(h, CC, sensors)
            said = (await events.next(120)).data
        assert said["statusCode"] == 0
        assert raws(root) == [("LSSTComCam", 2026112100002, n) for n in range(9)]
        db = ConsDb.open(database, archive_root=root)
        try:
            with db.engine("LSSTComCam").connect() as connection:
                table = db.table("LSSTComCam", "ccdexposure")
                assert len(connection.execute(sa.select(table)).all()) == 9
        finally:
            db.close()
