"""The archive as a Butler repository: raws registered in place from their headers,
once each, their records updated when a header is completed; the repository found by
the Butler's own tools; pixels given back as the file holds them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from cscs.camera.geometry import Camera
from cscs.repository import RawRef, Repository, RepositoryError
from tests.support.raws import archive_image

LATISS_IMAGE = "AT_O_20261121_000001"
COMCAM_IMAGE = "CC_O_20261121_000002"


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    repository = Repository.open(tmp_path)
    yield repository
    repository.close()


def raw_count(repo: Repository) -> int:
    return len(repo.butler.query_datasets("raw", collections="*", find_first=False, explain=False))


def exposure_record(repo: Repository, instrument: str, number: int) -> Any:
    (record,) = repo.butler.query_dimension_records(
        "exposure", data_id={"instrument": instrument, "exposure": number}
    )
    return record


def test_the_archive_root_is_the_repository(tmp_path: Path) -> None:
    Repository.open(tmp_path).close()
    assert (tmp_path / "butler.yaml").exists()
    assert (tmp_path / "butler.sqlite3").exists()
    again = Repository.open(tmp_path)  # opening an existing one changes nothing
    again.close()


def test_two_processes_opening_a_new_archive_at_once_both_get_it(tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        repos = list(pool.map(lambda _: Repository.open(tmp_path / "archive"), range(4)))
    for repo in repos:
        repo.close()


def test_an_image_is_registered_in_place_once(repo: Repository, tmp_path: Path) -> None:
    files = archive_image(tmp_path, Camera.COMCAM, COMCAM_IMAGE)
    first = repo.register(files)
    assert first.refused == []
    assert [(f.sensor, f.detector, f.changed) for f in first.registered] == [
        (f"R22_S{x}{y}", 3 * x + y, True) for x in range(3) for y in range(3)
    ]
    assert {f.exposure_id for f in first.registered} == {2026112100002}
    again = repo.register(files)  # redelivered
    assert [f.changed for f in again.registered] == [False] * 9
    assert raw_count(repo) == 9
    uri = repo.butler.getURI("raw", instrument="LSSTComCam", exposure=2026112100002,
                             detector=4, collections="LSSTComCam/raw/all")  # fmt: skip
    assert Path(uri.ospath) == files[4]  # in place: not copied


def test_a_call_mixing_images_and_instruments_tells_new_from_known_files(
    repo: Repository, tmp_path: Path
) -> None:
    comcam = archive_image(tmp_path, Camera.COMCAM, COMCAM_IMAGE, ["R22_S00", "R22_S01"])
    (latiss,) = archive_image(tmp_path, Camera.LATISS, LATISS_IMAGE)
    later = archive_image(tmp_path, Camera.COMCAM, "CC_O_20261121_000003", ["R22_S00"])
    repo.register([comcam[0], latiss])
    result = repo.register([*comcam, latiss, *later])
    assert result.refused == []
    assert {(f.image_name, f.sensor, f.changed) for f in result.registered} == {
        (COMCAM_IMAGE, "R22_S00", False),
        (COMCAM_IMAGE, "R22_S01", True),
        (LATISS_IMAGE, "R00_S00", False),
        ("CC_O_20261121_000003", "R22_S00", True),
    }
    assert raw_count(repo) == 4


def test_a_file_rewritten_with_its_header_updates_the_records(
    repo: Repository, tmp_path: Path
) -> None:
    (early,) = archive_image(tmp_path, Camera.LATISS, LATISS_IMAGE, header=False)
    repo.register([early])
    record = exposure_record(repo, "LATISS", 2026112100001)
    assert record.physical_filter == "unknown"
    assert record.timespan is None
    (late,) = archive_image(tmp_path, Camera.LATISS, LATISS_IMAGE, image_type="BIAS")
    assert late == early
    done = repo.register([late])
    assert [f.changed for f in done.registered] == [True]
    record = exposure_record(repo, "LATISS", 2026112100001)
    assert record.physical_filter == "SDSSr_65mm~empty"
    assert record.observation_type == "bias"
    assert record.timespan is not None
    assert raw_count(repo) == 1
    pixels = repo.butler.get("raw", instrument="LATISS", exposure=2026112100001, detector=0,
                             collections="LATISS/raw/all")  # fmt: skip
    assert pixels[0].header["IMGTYPE"] == "BIAS"  # the rewritten file is read, whole


def test_files_that_cannot_be_registered_are_refused_naming_why(
    repo: Repository, tmp_path: Path
) -> None:
    (good,) = archive_image(tmp_path, Camera.LATISS, LATISS_IMAGE)
    not_fits = tmp_path / "junk.fits"
    not_fits.write_bytes(b"not a FITS file" * 200)
    forged = tmp_path / "forged.fits"
    with fits.open(good) as hdus:
        hdus[0].header["CCDSLOT"] = "S11"
        hdus.writeto(forged)
    copy = tmp_path / "copy.fits"
    copy.write_bytes(good.read_bytes())
    result = repo.register([good, not_fits, forged, tmp_path / "absent.fits", copy])
    assert [f.path for f in result.registered] == [good]
    reasons = dict(result.refused)
    assert "junk.fits" in reasons[not_fits]
    assert "LATISS has no detector 'R00_S11'" in reasons[forged]
    assert "absent.fits" in reasons[tmp_path / "absent.fits"]
    assert "is also in" in reasons[copy]  # the same data ID twice in one call
    later = repo.register([copy])
    assert f"is registered from {good}" in dict(later.refused)[copy]
    assert raw_count(repo) == 1


def test_registered_tells_which_files_are_in_the_repository(
    repo: Repository, tmp_path: Path
) -> None:
    files = archive_image(tmp_path, Camera.COMCAM, COMCAM_IMAGE)
    repo.register(files[:5])
    stranger = tmp_path / "AT_O_20261121_000009_R00_S00.fits"
    assert repo.registered([*files, stranger, tmp_path / "x.fits"]) == set(files[:5])


def test_get_gives_back_the_file_s_pixels_and_header_and_keeps_no_file_open(
    repo: Repository, tmp_path: Path
) -> None:
    (path,) = archive_image(tmp_path, Camera.LATISS, LATISS_IMAGE, pixels=1000)
    repo.register([path])
    before = len(os.listdir("/proc/self/fd"))
    hdus = repo.butler.get("raw", instrument="LATISS", exposure=2026112100001, detector=0,
                           collections="LATISS/raw/all")  # fmt: skip
    assert len(os.listdir("/proc/self/fd")) == before
    with fits.open(path) as original:
        assert len(hdus) == len(original) == 17
        assert hdus[0].header == original[0].header
        for ours, theirs in zip(hdus[1:], original[1:], strict=True):
            assert np.array_equal(ours.data, theirs.data)
            assert ours.header["EXTNAME"] == theirs.header["EXTNAME"]


def test_raws_are_queried_in_the_butler_s_language(repo: Repository, tmp_path: Path) -> None:
    for seq in range(1, 4):
        image = f"AT_O_20261121_{seq:06d}"
        kind = "BIAS" if seq == 1 else "DARK" if seq == 2 else "OBJECT"
        repo.register(archive_image(tmp_path, Camera.LATISS, image, image_type=kind))
    repo.register(archive_image(tmp_path, Camera.LATISS, "AT_O_20261122_000001"))
    repo.register(archive_image(tmp_path, Camera.COMCAM, "CC_O_20261121_000004",
                                physical_filter="r_03"))  # fmt: skip

    def images(where: str, **bind: object) -> list[str]:
        found = repo.query_raws(where, bind=bind or None, limit=100)
        return [f"{r.image_name}:{r.detector}" for r in found]

    assert images("instrument = 'LATISS' AND exposure.day_obs = 20261121") == [
        "AT_O_20261121_000001:0", "AT_O_20261121_000002:0", "AT_O_20261121_000003:0"]  # fmt: skip
    assert images("instrument = 'LATISS' AND exposure.seq_num IN (2..3)") == [
        "AT_O_20261121_000002:0", "AT_O_20261121_000003:0"]  # fmt: skip
    assert images("exposure.observation_type IN ('bias', 'dark')") == [
        "AT_O_20261121_000001:0", "AT_O_20261121_000002:0"]  # fmt: skip
    assert images("detector = 4") == ["CC_O_20261121_000004:4"]
    assert len(images("physical_filter = 'SDSSr_65mm~empty'")) == 4
    assert len(images("band = 'r'")) == 4 + 9
    assert len(images("instrument = inst", inst="LSSTComCam")) == 9
    assert images("instrument = inst AND exposure = exp AND detector IN (dets)",
                  inst="LSSTComCam", exp=2026112100004, dets=[0, 8]) == [
        "CC_O_20261121_000004:0", "CC_O_20261121_000004:8"]  # fmt: skip
    (ref,) = repo.query_raws("exposure = 2026112200001", limit=1)
    assert ref == RawRef("AT_O_20261122_000001", "R00_S00", "LATISS", 2026112200001, 0,
                         tmp_path / "LATISS/20261122/AT_O_20261122_000001"
                         / "AT_O_20261122_000001_R00_S00.fits")  # fmt: skip


def test_a_repository_that_cannot_be_made_is_a_repository_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(RepositoryError, match="cannot open the repository"):
        Repository.open(blocked / "archive")


@pytest.mark.broker
def test_the_butler_command_lists_raws_and_exposures(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path)
    repo.register(archive_image(tmp_path, Camera.COMCAM, COMCAM_IMAGE))
    repo.register(archive_image(tmp_path, Camera.LATISS, LATISS_IMAGE, image_type="BIAS"))
    repo.close()
    butler = [sys.executable, "-c", "from lsst.daf.butler.cli.butler import main; main()"]
    datasets = subprocess.run([*butler, "query-datasets", str(tmp_path), "raw",
                               "--collections", "*/raw/all"],
                              capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    rows = [line.split() for line in datasets.stdout.splitlines() if line.startswith(" raw ")
            or line.startswith("raw ")]  # fmt: skip
    assert len(rows) == 10
    assert {(r[1], r[3], r[4], r[5]) for r in rows} >= {
        ("LATISS/raw/all", "LATISS", "0", "2026112100001"),
        ("LSSTComCam/raw/all", "LSSTComCam", "8", "2026112100002"),
    }
    exposures = subprocess.run([*butler, "query-dimension-records", str(tmp_path), "exposure"],
                               capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    lines = exposures.stdout.splitlines()
    assert any("AT_O_20261121_000001" in line and "bias" in line and "SDSSr_65mm" in line
               for line in lines)  # fmt: skip
    assert any(COMCAM_IMAGE in line and "object" in line for line in lines)


def test_what_another_process_registers_later_is_seen_by_queries_and_qc(tmp_path: Path) -> None:
    """OCS Batch opens the repository before the OODS of a second camera registers that
    camera's first image: its queries and QC datasets must find the new instrument (a
    Butler caches instruments; a stale cache refused "no instrument LSSTComCam")."""
    root = tmp_path / "archive"
    batch, oods = Repository.open(root), Repository.open(root)
    try:
        oods.register(archive_image(root, Camera.LATISS, "AT_O_20261121_000001"))
        assert len(batch.query_raws("instrument = 'LATISS'", limit=10)) == 1
        comcam = archive_image(root, Camera.COMCAM, "CC_O_20261121_000001", sensors=["R22_S11"])
        oods.register(comcam)
        [raw] = batch.query_raws("instrument = 'LSSTComCam' AND detector = 4", limit=10)
        assert (raw.image_name, raw.path) == ("CC_O_20261121_000001", comcam[0].absolute())
        assert batch.registered(comcam) == {comcam[0].absolute()}
        assert batch.record_qc("LSSTComCam", "CC_O_20261121_000001", "R22_S11", {"psfFwhm": 0.7})
    finally:
        batch.close()
        oods.close()
