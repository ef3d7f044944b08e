"""The observatory's numbers and a raw file's dimension records from its own header:
what a Rubin user's data ID means here is what it means at the observatory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import astropy.time
import pytest

from cscs.camera.data_ids import detector_ids
from cscs.camera.geometry import Camera
from cscs.repository import detector_id, exposure_id
from cscs.repository.records import (
    BadHeaderError,
    detector_records,
    instrument_record,
    raw_records,
)
from cscs.repository.repository import read_primary_header
from tests.support.raws import archive_image

LATISS_IMAGE = "AT_O_20261121_000001"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("AT_O_20261121_000001", 2026112100001),
        ("CC_O_20261231_099999", 2026123199999),
        ("AT_C_20261121_000001", 2026112100001),  # CCS shares the OCS counter since 2023
        ("AT_C_20230101_000001", 3023010100001),  # … and was a thousand years on before
        ("AT_H_20261121_000001", 4026112100001),  # phosim: two thousand years on
        ("AT_S_20250101_000001", 7025010100001),
    ],
)
def test_exposure_numbers_are_obs_lsst_s(image: str, expected: int) -> None:
    assert exposure_id(image) == expected


def test_images_without_an_exposure_number_are_refused_naming_why() -> None:
    with pytest.raises(ValueError, match="over 99999"):
        exposure_id("AT_O_20261121_100000")
    with pytest.raises(ValueError, match="controller 'X'"):
        exposure_id("AT_X_20261121_000001")
    with pytest.raises(ValueError, match="not an image name"):
        exposure_id("AT_O_2026112_000001")


def test_detector_numbers_are_obs_lsst_s() -> None:
    assert detector_id("LATISS", "R00_S00") == 0
    assert [detector_id("LSSTComCam", f"R22_S{x}{y}") for x in range(3) for y in range(3)] == list(
        range(9)
    )
    assert detector_id("LSSTCam", "R01_S00") == 0
    assert detector_id("LSSTCam", "R43_S22") == 188
    assert detector_id("LSSTCam", "R00_SG0") == 189
    assert detector_id("LSSTCam", "R04_SG0") == 193
    assert detector_id("LSSTCam", "R44_SW1") == 204
    with pytest.raises(ValueError, match="LSSTComCam has no detector 'R22_S33'"):
        detector_id("LSSTComCam", "R22_S33")
    with pytest.raises(ValueError, match="unknown instrument"):
        detector_id("HSC", "R22_S11")


@pytest.mark.parametrize("camera", list(Camera))
def test_our_camera_geometry_numbers_its_detectors_in_the_same_order(camera: Camera) -> None:
    ours = [d.name for d in camera.detectors]
    assert [detector_id(camera.instrument, name) for name in ours] == list(range(len(ours)))


def test_instrument_and_detector_records() -> None:
    assert instrument_record("LSSTCam")["detector_max"] == 205
    records = {r["full_name"]: r for r in detector_records("LSSTCam")}
    assert len(records) == len(detector_ids("LSSTCam")) == 205
    assert records["R22_S11"] == {"instrument": "LSSTCam", "id": 94, "full_name": "R22_S11",
                                  "raft": "R22", "name_in_raft": "S11",
                                  "purpose": "SCIENCE"}  # fmt: skip
    assert records["R00_SW0"]["purpose"] == "WAVEFRONT"
    assert records["R40_SG1"]["purpose"] == "GUIDER"


def header(tmp_path: Path, **options: Any) -> dict[str, Any]:
    (path,) = archive_image(tmp_path, Camera.LATISS, LATISS_IMAGE, **options)
    return read_primary_header(path)


def test_an_archived_file_s_header_gives_every_record(tmp_path: Path) -> None:
    primary = header(tmp_path, image_type="DARK", exposure_time=5.0, group="g1")
    records = raw_records(primary)
    assert (records.instrument, records.image_name, records.sensor) == (
        "LATISS", LATISS_IMAGE, "R00_S00")  # fmt: skip
    assert records.data_id == {"instrument": "LATISS", "exposure": 2026112100001, "detector": 0}
    assert records.physical_filter == {
        "instrument": "LATISS", "name": "SDSSr_65mm~empty", "band": "r"}  # fmt: skip
    assert records.group == {"instrument": "LATISS", "name": "g1"}
    day = records.day_obs["timespan"]
    assert day.begin.tai.isot[:19] == "2026-11-21T12:00:00"  # noon TAI to noon TAI
    assert day.end.tai.isot[:19] == "2026-11-22T12:00:00"
    exposure = records.exposure
    assert exposure["obs_id"] == LATISS_IMAGE
    assert (exposure["day_obs"], exposure["seq_num"]) == (20261121, 1)
    assert (exposure["seq_start"], exposure["seq_end"]) == (1, 1)
    assert exposure["observation_type"] == "dark"
    assert exposure["observation_reason"] == "test"
    assert (exposure["exposure_time"], exposure["dark_time"]) == (5.0, 5.5)
    assert (exposure["target_name"], exposure["science_program"]) == ("field", "test")
    assert (exposure["tracking_ra"], exposure["tracking_dec"]) == (10.0, -85.0)  # a dark tracks
    assert exposure["zenith_angle"] == pytest.approx(90.0 - primary["ELSTART"])
    assert exposure["azimuth"] == primary["AZSTART"]
    assert exposure["can_see_sky"] is False
    assert exposure["has_simulated"] is False
    span = exposure["timespan"]
    assert span.begin.tai.isot[:23] == primary["DATE-BEG"]
    assert span.end.tai.isot[:23] == primary["DATE-END"]
    assert (span.end - span.begin).sec == pytest.approx(5.0)


def test_a_file_archived_before_its_header_has_records_of_unknowns(tmp_path: Path) -> None:
    records = raw_records(header(tmp_path, header=False))
    assert records.physical_filter["name"] == "unknown"
    assert records.group["name"] == LATISS_IMAGE
    exposure = records.exposure
    assert exposure["timespan"] is None
    for key in ("exposure_time", "observation_type", "tracking_ra", "zenith_angle", "can_see_sky"):
        assert exposure[key] is None, key


def test_an_end_before_the_start_is_clamped_to_it(tmp_path: Path) -> None:
    primary = header(tmp_path)
    primary["DATE-END"] = "2026-11-21T19:00:00.000"
    span = raw_records(primary).exposure["timespan"]
    assert span.begin == astropy.time.Time(primary["DATE-BEG"], scale="tai")
    assert 0 <= (span.end - span.begin).sec < 1e-6  # the Butler's shortest timespan: 1 ns


@pytest.mark.parametrize(
    ("keyword", "value", "reason"),
    [
        ("INSTRUME", "HSC", "INSTRUME 'HSC' is not a camera of ours"),
        ("OBSID", "CC_O_20261121_000001", "not a LATISS image"),
        ("OBSID", None, "OBSID .* is missing"),
        ("DAYOBS", "20261122", "DAYOBS '20261122' disagrees with OBSID"),
        ("RAFTBAY", "R22", "LATISS has no detector 'R22_S00'"),
        ("EXPTIME", "thirty", "EXPTIME 'thirty' is not a finite number"),
        ("EXPTIME", float("nan"), "EXPTIME nan is not a finite number"),
        ("DATE-BEG", "yesterday", "DATE-BEG 'yesterday' is not an ISO time"),
        ("FILTER", "x" * 40, "FILTER .* longer than 32"),
        ("IMGTYPE", 7, "IMGTYPE 7 is not text"),
    ],
)
def test_a_header_that_cannot_describe_its_file_is_refused_naming_the_keyword(
    tmp_path: Path, keyword: str, value: Any, reason: str
) -> None:
    primary = header(tmp_path)
    primary[keyword] = value
    with pytest.raises(BadHeaderError, match=reason):
        raw_records(primary)


def test_free_text_too_long_for_the_registry_is_cut_not_refused(tmp_path: Path) -> None:
    primary = header(tmp_path)
    primary["OBJECT"] = "a" * 100
    assert raw_records(primary).exposure["target_name"] == "a" * 64


@pytest.mark.parametrize("image_type", ["BIAS", "FLAT"])
def test_a_bias_or_a_flat_has_no_tracking_position(tmp_path: Path, image_type: str) -> None:
    exposure = raw_records(header(tmp_path, image_type=image_type)).exposure
    assert (exposure["tracking_ra"], exposure["tracking_dec"]) == (None, None)
