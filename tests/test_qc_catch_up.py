"""QC caught up (issue 30): archived science images without a QC stage are measured by
OCSBatch's catch-up, oldest first and bounded; those with QC, a given-up failure, or no
sky (a bias) are not, and an image never gets a second job while one measures it.

The selection runs on SQLite and PostgreSQL (``catalog_url``); the pass runs in
OCSBatch:0 on the in-memory bus, over simulated raws registered in the archive's Butler
repository (a data query selects only those), with an engine that hands each task's
metrics back in-process (what is tested is which images are measured and what is said
about them, not the measurement: tests/test_ocs_batch.py measures on Dask).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from cscs.camera.geometry import Camera
from cscs.camera.naming import ImageName
from cscs.catalog import ArchivedFile, BatchRecords, Catalog, Observation, sqlite_url
from cscs.catalog.batch import MAX_QC_ATTEMPTS
from cscs.cluster import Engine
from cscs.core.protocol import decode_json_object
from cscs.core.remote import EventStream, Remote
from cscs.core.tai import current_tai
from cscs.core.testing import MemoryBroker, enabled_csc
from cscs.core.topics import CscAddress
from cscs.core.transport import Subscription
from cscs.ocs_batch.catch_up import CATCH_UP, instruments_of
from cscs.ocs_batch.csc import OcsBatchCsc
from sim.testkit import SimulatedExposure, register_in_repository, simulated_archive
from tests.support.batch_engine import InProcessEngine, metrics

SCIENCE = ("OBJECT", "ENGTEST")
SENSORS = ("R22_S00", "R22_S11")
HOUR = 3600.0


def archive(
    catalog: Catalog, image: str, kind: str, start: float, *, archived: float | None = None,
    sensors: Sequence[str] = SENSORS, instrument: str = "LSSTComCam", header: bool = True,
) -> None:  # fmt: skip
    for sensor in sensors:
        catalog.record(ArchivedFile(
            image_name=image, sensor=sensor, instrument=instrument, day_obs="20261121",
            path=f"/nowhere/{image}_{sensor}.fits", byte_size=1, checksum="0",
            checksum_algorithm="adler32", header_complete=header, missing_keywords="",
            daq_image="", header_url="", header_md5="", software_version="1",
            exposure_start_tai=start, archived_tai=start + 10.0 if archived is None else archived,
        ))  # fmt: skip
    if header:
        catalog.record_observation(Observation(image, kind, "", "r", "r", 15.0))


def archive_files(
    catalog: Catalog, image: str, kind: str, start: float, *,
    sensors: Sequence[str] = SENSORS, registered: bool = True,
) -> list[ArchivedFile]:  # fmt: skip
    """Simulated raws of a ComCam image in the archive, registered in its repository as
    the OODS would (unless not ``registered``), their catalog rows given these times."""
    root = Path(catalog.url.removeprefix("sqlite:///")).parent
    number = ImageName.parse(image).seq_num
    rows = simulated_archive(root, Camera.COMCAM, [SimulatedExposure(kind, 1.0)], list(sensors),
                             first_number=number)  # fmt: skip
    if registered:
        register_in_repository(root, rows)
    for row in rows:
        catalog.record(replace(row, exposure_start_tai=start, archived_tai=start + 10.0))
    return rows


def open_archive(tmp_path: Path) -> Catalog:
    (tmp_path / "archive").mkdir()
    return Catalog(sqlite_url(tmp_path / "archive" / "catalog.sqlite"))


def due(records: BatchRecords, now: float, **kwargs: Any) -> list[tuple[str, tuple[str, ...]]]:
    values: dict[str, Any] = {
        "image_types": SCIENCE, "instruments": {"LSSTComCam"}, "sensors": (),
        "since_tai": now - 24 * HOUR, "archived_before_tai": now, "exclude": (), "limit": 10,
    } | kwargs  # fmt: skip
    return [(d.image_name, d.sensors) for d in records.qc_due(**values)]


# ---- the selection ---------------------------------------------------------------------


def test_due_are_science_images_without_qc_oldest_first_and_bounded(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    records = BatchRecords(catalog)
    now = current_tai()
    archive(catalog, "IMG_3", "OBJECT", now - 300)
    archive(catalog, "IMG_1", "ENGTEST", now - 900)
    archive(catalog, "IMG_2", "OBJECT", now - 600)
    archive(catalog, "BIAS_1", "BIAS", now - 1000)  # no sky
    archive(catalog, "NOHDR", "OBJECT", now - 950, header=False)  # type not known yet
    archive(catalog, "AT_1", "OBJECT", now - 980, instrument="LATISS", sensors=("RXX_S00",))
    archive(catalog, "OLD", "OBJECT", now - 48 * HOUR)  # before the window
    archive(catalog, "FRESH", "OBJECT", now - 20, archived=now - 5)  # auto_qc's turn
    try:
        assert due(records, now - 10) == [
            ("IMG_1", SENSORS),
            ("IMG_2", SENSORS),
            ("IMG_3", SENSORS),
        ]
        assert due(records, now - 10, limit=2) == [("IMG_1", SENSORS), ("IMG_2", SENSORS)]
        assert due(records, now - 10, exclude={"IMG_1"}, limit=1) == [("IMG_2", SENSORS)]
        assert due(records, now - 10, sensors=("R22_S11",))[0] == ("IMG_1", ("R22_S11",))
        assert [d for d, _ in due(records, now - 10, instruments={"LATISS"})] == ["AT_1"]
        assert "FRESH" in [d for d, _ in due(records, now)]
        # Measured: not due; one detector measured: only the other is.
        records.record_qc("j1", metrics("IMG_1", "R22_S00"), now)
        records.record_qc("j1", metrics("IMG_1", "R22_S11"), now)
        records.record_qc("j2", metrics("IMG_2", "R22_S00"), now)
        assert due(records, now - 10)[:2] == [("IMG_2", ("R22_S11",)), ("IMG_3", SENSORS)]
        # A detector whose task failed is given up; one whose job failed, tried again.
        records.record_qc_failure([("IMG_2", "R22_S11")], "j2", "unreadable", now, final=True)
        for _ in range(MAX_QC_ATTEMPTS):
            assert [d for d, _ in due(records, now - 10)] == ["IMG_3"]
            records.record_qc_failure([("IMG_3", "R22_S00")], "j3", "deadline", now, final=False)
        assert due(records, now - 10) == [("IMG_3", ("R22_S11",))]
        # The header arrives: the image is due.
        catalog.record_observation(Observation("NOHDR", "OBJECT", "", "r", "r", 15.0))
        assert due(records, now - 10)[0] == ("NOHDR", SENSORS)
    finally:
        catalog.close()


def test_the_cameras_auto_qc_names_are_instruments() -> None:
    assert instruments_of([1, 2, 3, 99]) == {"LATISS", "LSSTComCam", "LSSTCam"}


# ---- the pass in OCSBatch:0 --------------------------------------------------------------


@dataclass
class Batch:
    csc: OcsBatchCsc
    dm: Subscription  # dm/#
    events: EventStream  # OCSBatch:0's events, from before it was enabled

    async def stages(self, count: int) -> dict[str, dict[str, Any]]:
        """The next ``count`` image-qc stages, by image."""
        found: dict[str, dict[str, Any]] = {}
        while len(found) < count:
            message = await self.dm.get(30)
            if message.topic == "dm/status/image-qc":
                payload = decode_json_object(message.payload)
                found[str(payload["imageName"])] = payload
        return found

    async def jobs(self, status: str, count: int) -> list[str]:
        """The ids of the next ``count`` jobs whose ``jobStatus`` says ``status``."""
        seen: list[str] = []
        while len(seen) < count:
            event = await self.events.wait_for(
                lambda e: e.name == "jobStatus" and e.data.get("status") == status, 30
            )
            seen.append(str(event.data["jobId"]))
        return seen

    async def ended(self, count: int) -> None:
        for _ in range(count):
            await self.events.wait_for(lambda e: e.name == "jobResult", 30)


@contextlib.asynccontextmanager
async def batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: InProcessEngine, **config: Any
) -> AsyncIterator[Batch]:
    async def start(*args: Any) -> InProcessEngine:
        return engine

    monkeypatch.setattr(Engine, "start", start)
    broker = MemoryBroker()
    values = {"archive_root": str(tmp_path / "archive"), "auto_qc": True, "auto_qc_cameras": [2],
              "auto_qc_catch_up_grace": 0.0,
              "reference_catalog": str(tmp_path)} | config  # fmt: skip
    async with (
        broker.transport() as bus,
        Remote(bus, CscAddress("OCSBatch", 0, "t")) as remote,
        remote.stream() as events,
        bus.subscription("dm/#") as dm,
        enabled_csc(OcsBatchCsc, broker, tmp_path, "t", values) as harness,
    ):
        csc = harness.csc
        assert isinstance(csc, OcsBatchCsc)
        yield Batch(csc, dm, events)


async def test_a_pass_measures_science_images_without_qc_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = open_archive(tmp_path)
    records = BatchRecords(catalog)
    now = current_tai()
    sci_1, sci_2, done, gave_up, bias, broken = (f"CC_O_20261121_00000{i}" for i in range(1, 7))
    for name, kind, age in [(sci_1, "OBJECT", 900), (sci_2, "ENGTEST", 800),
                            (done, "OBJECT", 950), (gave_up, "OBJECT", 940),
                            (bias, "BIAS", 930), (broken, "OBJECT", 700)]:  # fmt: skip
        archive_files(catalog, name, kind, now - age)
    for sensor in SENSORS:
        records.record_qc("old", metrics(done, sensor), now)
        records.record_qc_failure([(gave_up, sensor)], "old", "unreadable", now, final=True)
    engine = InProcessEngine(broken={broken}, gate=None)
    async with batch(tmp_path, monkeypatch, engine) as site:
        said = await site.stages(3)  # the pass at enable
        await site.ended(3)
        statuses = {image: stage["status"] for image, stage in said.items()}
        assert statuses == {sci_1: "measured", sci_2: "measured", broken: "failed"}
        assert sorted(engine.measured) == [(i, s) for i in (sci_1, sci_2) for s in SENSORS]
        assert {j.origin for j in site.csc.queue.book} == {CATCH_UP}
        assert records.qc_of(sci_1).keys() == set(SENSORS)
        # The broken image's other detector was cancelled with its job, not given up:
        # tried once more (and, its file broken too, given up).
        assert await site.csc.catch_up.run_pass() == 1
        assert (await site.stages(1))[broken]["status"] == "failed"
        await site.ended(1)
        # The next pass finds nothing: measured, or given up (the broken files).
        assert await site.csc.catch_up.run_pass() == 0
    catalog.close()


async def test_an_image_being_measured_gets_no_second_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = open_archive(tmp_path)
    now = current_tai()
    images = [f"CC_O_20261121_00001{index}" for index in range(4)]
    for index, image in enumerate(images):
        archive_files(catalog, image, "OBJECT", now - 900 + index)
    gate = asyncio.Event()
    engine = InProcessEngine(broken=set(), gate=gate)
    config = {"auto_qc_catch_up_images": 2, "max_running_jobs": 1}
    async with batch(tmp_path, monkeypatch, engine, **config) as site:
        await site.jobs("queued", 2)  # the pass at enable: the oldest two
        assert site.csc.queue.busy_images() == set(images[:2])
        assert await site.csc.catch_up.run_pass() == 0  # bounded: two catch-up jobs at most
        # Neither auto_qc nor the catch-up queues a second job for a busy image.
        assert not await site.csc.auto_qc.measure(images[0], SENSORS, "auto_qc")
        assert len(list(site.csc.queue.book)) == 2
        gate.set()
        assert set(await site.stages(2)) == set(images[:2])
        await site.ended(2)
        assert await site.csc.catch_up.run_pass() == 2
        assert set(await site.stages(2)) == set(images[2:])
        await site.ended(2)
    assert sorted(engine.measured) == sorted({(i, s) for i in images for s in SENSORS})
    catalog.close()


async def test_an_image_archived_while_enabled_and_never_announced_is_caught_up_next_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = open_archive(tmp_path)
    engine = InProcessEngine(broken=set(), gate=None)
    async with batch(tmp_path, monkeypatch, engine, auto_qc_catch_up_interval=1.0) as site:
        image = "CC_O_20261121_000020"
        archive_files(catalog, image, "OBJECT", current_tai() - 60)  # its announcement lost
        assert (await site.stages(1))[image]["status"] == "measured"
        assert site.csc.catch_up.passes >= 2  # the one at enable found nothing
    catalog.close()


async def test_images_always_refused_do_not_keep_newer_ones_from_qc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = open_archive(tmp_path)
    records = BatchRecords(catalog)
    now = current_tai()
    refused = [f"CC_O_20261121_00003{index}" for index in range(3)]
    for index, image in enumerate(refused):  # two files each: more than a job may take
        archive_files(catalog, image, "OBJECT", now - 900 + index)
    newer = "CC_O_20261121_000040"
    archive_files(catalog, newer, "OBJECT", now - 800, sensors=SENSORS[:1])
    engine = InProcessEngine(broken=set(), gate=None)
    config = {"auto_qc_catch_up_images": 2, "max_files_per_job": 1}
    async with batch(tmp_path, monkeypatch, engine, **config) as site:
        assert (await site.stages(1))[newer]["status"] == "measured"  # the pass at enable
        await site.ended(1)
        for _ in range(MAX_QC_ATTEMPTS):
            await site.csc.catch_up.run_pass()
        # Each refusal an attempt: given up after MAX_QC_ATTEMPTS, never queued.
        assert due(records, current_tai()) == []
    assert engine.measured == [(newer, SENSORS[0])]
    catalog.close()


async def test_an_image_not_yet_in_the_repository_waits_for_it_and_costs_no_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = open_archive(tmp_path)
    image = "CC_O_20261121_000050"
    rows = archive_files(catalog, image, "OBJECT", current_tai() - 900, registered=False)
    engine = InProcessEngine(broken=set(), gate=None)
    async with batch(tmp_path, monkeypatch, engine) as site:
        # Archived, but the OODS has not registered it: no data query can select it yet.
        for _ in range(MAX_QC_ATTEMPTS + 1):
            assert await site.csc.catch_up.run_pass() == 0
        await asyncio.to_thread(register_in_repository, tmp_path / "archive", rows)
        assert await site.csc.catch_up.run_pass() == 1  # not given up meanwhile
        assert (await site.stages(1))[image]["status"] == "measured"
        await site.ended(1)
    assert sorted(engine.measured) == [(image, sensor) for sensor in SENSORS]
    catalog.close()
