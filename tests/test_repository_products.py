"""OCS Batch's products in the repository: masters certified in the calibration
collection for the time they apply, a later master taking over from its start, and
per-detector QC a Butler user reads beside the raws."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from lsst.daf.butler import Timespan

from cscs.camera.geometry import Camera
from cscs.camera.observatory import astropy_time
from cscs.repository import ProductRefusedError, Repository
from tests.support.raws import archive_image, start_tai

DAY = 86400.0
T0 = start_tai("AT_O_20261121_000001")


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    repository = Repository.open(tmp_path)
    yield repository
    repository.close()


def master(root: Path, kind: str, job_id: str, sensor: str = "R00_S00", value: float = 1.0) -> Path:
    """A master as OCS Batch publishes it (a FITS file under the archive's calib tree)."""
    path = root / "LATISS" / "calib" / kind / job_id / f"{kind}_{sensor}.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(np.full((4, 4), value, np.float32))]).writeto(path)
    return path


def master_at(repo: Repository, kind: str, tai: float) -> Path | None:
    """The file of the master that applied at ``tai``, as a Butler user finds it."""
    moment = astropy_time(tai)
    ref = repo.butler.find_dataset(kind, {"instrument": "LATISS", "detector": 0},
                                   collections="LATISS/calib",
                                   timespan=Timespan(moment, moment))  # fmt: skip
    return None if ref is None else Path(repo.butler.getURI(ref).ospath)


def test_a_master_is_certified_in_place_from_its_start(repo: Repository, tmp_path: Path) -> None:
    path = master(tmp_path, "bias", "20261121-aa", value=7.0)
    done = repo.register_calibration("bias", "LATISS", "R00_S00", path, job_id="20261121-aa",
                                     valid_from_tai=T0)  # fmt: skip
    assert (done.run, done.collection, done.detector, done.changed) == (
        "LATISS/calib/20261121-aa", "LATISS/calib", 0, True)  # fmt: skip
    assert done.valid_until_tai is None
    assert master_at(repo, "bias", T0 + 10 * DAY) == path  # in place: not copied
    assert master_at(repo, "bias", T0 - 1.0) is None  # not before its start
    hdus = repo.butler.get(
        "bias", instrument="LATISS", detector=0, collections="LATISS/calib/20261121-aa"
    )
    assert float(hdus[0].data[0, 0]) == 7.0
    again = repo.register_calibration("bias", "LATISS", "R00_S00", path, job_id="20261121-aa",
                                      valid_from_tai=T0)  # fmt: skip
    assert again.changed is False
    refs = repo.butler.query_datasets(
        "bias", collections="LATISS/calib/*", find_first=False, explain=False
    )
    assert len(refs) == 1


def test_a_later_master_supersedes_from_its_start_and_a_late_one_fills_a_gap(
    repo: Repository, tmp_path: Path
) -> None:
    first, second, early = (master(tmp_path, "dark", job) for job in ("j1", "j2", "j0"))
    repo.register_calibration("dark", "LATISS", "R00_S00", first, job_id="j1", valid_from_tai=T0)
    done = repo.register_calibration("dark", "LATISS", "R00_S00", second, job_id="j2",
                                     valid_from_tai=T0 + DAY)  # fmt: skip
    assert done.valid_until_tai is None
    assert master_at(repo, "dark", T0 + 1.0) == first
    assert master_at(repo, "dark", T0 + DAY + 1.0) == second
    late = repo.register_calibration("dark", "LATISS", "R00_S00", early, job_id="j0",
                                     valid_from_tai=T0 - DAY)  # fmt: skip
    assert late.valid_until_tai is not None
    assert math.isclose(late.valid_until_tai, T0)
    assert master_at(repo, "dark", T0 - DAY + 1.0) == early
    assert master_at(repo, "dark", T0 + 1.0) == first  # untouched by the late one
    assert master_at(repo, "dark", T0 + 5 * DAY) == second
    redone = master(tmp_path, "dark", "j4")  # the same start again: the newest replaces
    repo.register_calibration("dark", "LATISS", "R00_S00", redone, job_id="j4",
                              valid_from_tai=T0 + DAY)  # fmt: skip
    assert master_at(repo, "dark", T0 + 5 * DAY) == redone
    assert master_at(repo, "dark", T0 + 1.0) == first
    # A bias of the same detector is a different kind: no effect on the darks.
    repo.register_calibration("bias", "LATISS", "R00_S00", master(tmp_path, "bias", "j3"),
                              job_id="j3", valid_from_tai=T0 + 2 * DAY)  # fmt: skip
    assert master_at(repo, "dark", T0 + 5 * DAY) == redone


def test_bad_calibrations_are_refused_naming_why(repo: Repository, tmp_path: Path) -> None:
    path = master(tmp_path, "flat", "j1")

    def refused(**given: object) -> str:
        call: dict[str, object] = {"kind": "flat", "instrument": "LATISS", "sensor": "R00_S00",
                                   "path": path, "job_id": "j1", "valid_from_tai": T0}  # fmt: skip
        call.update(given)
        with pytest.raises(ProductRefusedError) as caught:
            repo.register_calibration(**call)  # type: ignore[arg-type]
        return str(caught.value)

    assert "is not one of bias, dark, flat" in refused(kind="fringe")
    assert "LATISS has no detector 'R22_S11'" in refused(sensor="R22_S11")
    assert "unknown instrument" in refused(instrument="HSC")
    assert "is not a file" in refused(path=tmp_path / "absent.fits")
    assert "job id '../x'" in refused(job_id="../x")
    assert "is not a time" in refused(valid_from_tai=float("nan"))
    repo.register_calibration("flat", "LATISS", "R00_S00", path, job_id="j1", valid_from_tai=T0)
    other = master(tmp_path, "flat", "j9")
    assert f"is registered from {path}" in refused(path=other)


def test_qc_is_a_dataset_beside_the_raws_replaced_when_measured_again(
    repo: Repository, tmp_path: Path
) -> None:
    repo.register(archive_image(tmp_path, Camera.COMCAM, "CC_O_20261121_000004"))
    metrics = {"psf_fwhm": 0.8, "sky_mean": 1200.5, "zero_point": None, "n_stars": 42}
    assert repo.record_qc("LSSTComCam", "CC_O_20261121_000004", "R22_S11", metrics) is True
    data_id = {"instrument": "LSSTComCam", "exposure": 2026112100004, "detector": 4}
    assert (
        repo.butler.get("quickLookQc", data_id, collections="LSSTComCam/runs/quickLookQc")
        == metrics
    )
    assert repo.record_qc("LSSTComCam", "CC_O_20261121_000004", "R22_S11", metrics) is False
    remeasured = metrics | {"psf_fwhm": 0.9, "sky_mean": math.nan}
    assert repo.record_qc("LSSTComCam", "CC_O_20261121_000004", "R22_S11", remeasured) is True
    held = repo.butler.get("quickLookQc", data_id, collections="LSSTComCam/runs/quickLookQc")
    assert held == metrics | {"psf_fwhm": 0.9, "sky_mean": None}  # NaN: not measured
    refs = repo.butler.query_datasets(
        "quickLookQc", collections="*", find_first=False, explain=False
    )
    assert len(refs) == 1


def test_bad_qc_is_refused_naming_why(repo: Repository, tmp_path: Path) -> None:
    repo.register(archive_image(tmp_path, Camera.LATISS, "AT_O_20261121_000001"))

    def refused(instrument: str, image: str, sensor: str, metrics: object) -> str:
        with pytest.raises(ProductRefusedError) as caught:
            repo.record_qc(instrument, image, sensor, metrics)  # type: ignore[arg-type]
        return str(caught.value)

    assert "register its raws first" in refused("LATISS", "AT_O_20261121_000002", "R00_S00", {})
    assert "is not LSSTComCam's" in refused("LSSTComCam", "AT_O_20261121_000001", "R22_S11", {})
    assert "image name" in refused("LATISS", "AT_O_2026", "R00_S00", {})
    assert "no detector" in refused("LATISS", "AT_O_20261121_000001", "R22_S11", {})
    assert "is a list" in refused("LATISS", "AT_O_20261121_000001", "R00_S00", {"x": [1]})
    assert "not an identifier" in refused("LATISS", "AT_O_20261121_000001", "R00_S00",
                                          {"a b": 1})  # fmt: skip
    assert "must be a mapping" in refused("LATISS", "AT_O_20261121_000001", "R00_S00", [1])
