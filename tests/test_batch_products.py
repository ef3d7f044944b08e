"""OCS Batch's products in the archive's Butler repository (issue 31, item 4): each
master a calibration dataset certified in ``{instrument}/calib`` from its first input's
exposure, each measured detector's QC a ``quickLookQc`` dataset beside the raws, both
registered from the catalog's rows right after the job records them; a registration the
repository cannot make now never fails the job and is retried, and at every start the
newest products of the catalog are registered again.

Over simulated raws registered in a real SQLite repository; OCSBatch:0 on the in-memory
bus with an engine that hands each task back in-process (tests/test_ocs_batch.py makes
masters on Dask and finds them certified).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from astropy.io import fits
from lsst.daf.butler import Timespan

from cscs.camera.geometry import Camera
from cscs.camera.observatory import astropy_time
from cscs.catalog import ArchivedFile, BatchRecords, CalibrationRecord, Catalog, sqlite_url
from cscs.cluster import Engine
from cscs.core.protocol import AckCode
from cscs.core.tai import current_tai
from cscs.core.testing import CscHarness, MemoryBroker, enabled_csc
from cscs.ocs_batch.csc import OcsBatchCsc
from cscs.ocs_batch.products import Products
from cscs.repository import Repository, RepositoryError, detector_id, exposure_id
from sim.testkit import SimulatedExposure, register_in_repository, simulated_archive
from tests.support.batch_engine import InProcessEngine, metrics

SENSOR = "R22_S11"
DETECTOR = detector_id("LSSTComCam", SENSOR)
QC_RUN = "LSSTComCam/runs/quickLookQc"


def archive(tmp_path: Path) -> list[ArchivedFile]:
    """A bias and a science image of one detector, archived and registered."""
    root = tmp_path / "archive"
    rows = simulated_archive(root, Camera.COMCAM, [SimulatedExposure("BIAS"),
                             SimulatedExposure("OBJECT", 1.0)], [SENSOR])  # fmt: skip
    register_in_repository(root, rows)
    return rows


def qc_in_repository(root: Path, image: str) -> dict[str, Any] | None:
    with Repository.open(root) as repository:
        data_id = {"instrument": "LSSTComCam", "detector": DETECTOR, "exposure": exposure_id(image)}
        ref = repository.butler.find_dataset("quickLookQc", data_id, collections=QC_RUN)
        return None if ref is None else dict(repository.butler.get(ref))


def master_at(root: Path, tai: float) -> Path | None:
    """The master bias that applied at ``tai``, as a Butler user finds it."""
    with Repository.open(root) as repository:
        moment = astropy_time(tai)
        ref = repository.butler.find_dataset(
            "bias", {"instrument": "LSSTComCam", "detector": DETECTOR},
            collections="LSSTComCam/calib", timespan=Timespan(moment, moment),
        )  # fmt: skip
        return None if ref is None else Path(repository.butler.getURI(ref).ospath)


def a_master(root: Path, job_id: str, inputs: list[ArchivedFile]) -> CalibrationRecord:
    """A master bias as a job leaves it: the file under the calib tree, its catalog row."""
    path = root / "LSSTComCam" / "calib" / "bias" / job_id / f"bias_{SENSOR}.fits"
    path.parent.mkdir(parents=True)
    fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4), np.float32))]).writeto(path)
    return CalibrationRecord(
        path=str(path), kind="bias", instrument="LSSTComCam", sensor=SENSOR, job_id=job_id,
        inputs=json.dumps([[Path(f.path).name, f.checksum] for f in inputs]),
        software_version="test", config="{}", byte_size=path.stat().st_size, checksum="0",
        checksum_algorithm="adler32", created_tai=current_tai(),
    )  # fmt: skip


@contextlib.asynccontextmanager
async def batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CscHarness]:
    engine = InProcessEngine(broken=set(), gate=None)

    async def start(*args: Any) -> InProcessEngine:
        return engine

    monkeypatch.setattr(Engine, "start", start)
    values = {"archive_root": str(tmp_path / "archive"), "reference_catalog": str(tmp_path)}
    async with enabled_csc(OcsBatchCsc, MemoryBroker(), tmp_path, "p", values) as harness:
        assert isinstance(harness.csc, OcsBatchCsc)
        yield harness


async def test_a_jobs_qc_is_a_dataset_beside_the_raws_with_the_catalogs_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = archive(tmp_path)
    science = rows[1].image_name
    async with batch(tmp_path, monkeypatch) as harness:
        csc = harness.csc
        assert isinstance(csc, OcsBatchCsc)
        params = {"pipeline": "image-qc", "dataQuery": "exposure.observation_type = 'object'"}
        final = await harness.remote.command("execute", params, timeout=60, check=False)
        assert final.code is AckCode.COMPLETE, final.result
        catalog = csc.queue.records
        assert catalog is not None
        recorded = catalog.qc_of(science)[SENSOR]
    assert recorded["psfFwhm"] == metrics(science, SENSOR)["psfFwhm"]
    assert qc_in_repository(tmp_path / "archive", science) == recorded


async def test_a_master_is_certified_from_its_first_inputs_exposure(tmp_path: Path) -> None:
    rows = archive(tmp_path)
    root = tmp_path / "archive"
    bias = rows[0]
    record = a_master(root, "20261121-00000001", [bias])
    catalog = Catalog(sqlite_url(root / "catalog.sqlite"))
    repository = Repository.open(root)
    products = Products(repository=lambda: repository, catalog=lambda: catalog,
                        records=lambda: BatchRecords(catalog),
                        log=structlog.get_logger())  # fmt: skip
    try:
        BatchRecords(catalog).record_calibration(record)
        await products.calibration(record)
        assert not products.pending
        assert products.registered == 1
    finally:
        repository.close()
        catalog.close()
    assert master_at(root, bias.exposure_start_tai + 1.0) == Path(record.path)
    assert master_at(root, bias.exposure_start_tai - 1.0) is None  # not before its input


async def test_a_registration_that_fails_never_fails_the_job_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = archive(tmp_path)
    science = rows[1].image_name
    failures = 2
    record_qc = Repository.record_qc

    def down(self: Repository, *args: Any, **kwargs: Any) -> bool:
        nonlocal failures
        if failures:
            failures -= 1
            raise RepositoryError("database is locked")
        return record_qc(self, *args, **kwargs)

    monkeypatch.setattr(Repository, "record_qc", down)
    async with batch(tmp_path, monkeypatch) as harness:
        csc = harness.csc
        assert isinstance(csc, OcsBatchCsc)
        params = {"pipeline": "image-qc", "dataQuery": "exposure.observation_type = 'object'"}
        final = await harness.remote.command("execute", params, timeout=60, check=False)
        assert final.code is AckCode.COMPLETE, final.result  # the product is good
        await asyncio.wait_for(csc.queue.products.drained(), 60)  # retried with back-off
    assert failures == 0
    assert qc_in_repository(tmp_path / "archive", science) is not None


async def test_products_the_repository_missed_are_registered_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = archive(tmp_path)
    root, (bias, science) = tmp_path / "archive", rows
    catalog = Catalog(sqlite_url(root / "catalog.sqlite"))
    records = BatchRecords(catalog)
    record = a_master(root, "20261121-00000002", [bias])
    records.record_calibration(record)  # as a run that died before registering them
    records.record_qc("20261121-00000003", metrics(science.image_name, SENSOR), current_tai())
    catalog.close()
    async with batch(tmp_path, monkeypatch) as harness:
        csc = harness.csc
        assert isinstance(csc, OcsBatchCsc)
        await asyncio.wait_for(csc.queue.products.drained(), 60)
        assert csc.queue.products.registered == 2
    assert qc_in_repository(root, science.image_name) is not None
    assert master_at(root, bias.exposure_start_tai + 1.0) == Path(record.path)
