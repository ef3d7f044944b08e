"""ConsDB (cscs/consdb): an image's rows from its headers, the quick-look QC in the
schema's units, hostile header values, on SQLite (offline) and PostgreSQL (`broker`)."""

from __future__ import annotations

import math
import multiprocessing
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cscs.camera.geometry import Camera, Detector
from cscs.camera.naming import ImageName
from cscs.camera.sky import Pointing, detector_wcs
from cscs.catalog import BatchRecords, Catalog, sqlite_url
from cscs.consdb import ConsDb, ConsDbError
from cscs.consdb.headers import detector_number, exposure_id
from cscs.core.testing import MemoryBroker
from sim.testkit import observatory
from tests.conftest import postgres_database

IMAGE = "CC_O_20261121_000042"
EXPOSURE_ID = 2026112100042
COMCAM = [d.name for d in Camera.COMCAM.detectors]


def header(image: str = IMAGE, **changes: Any) -> dict[str, Any]:
    """A primary header as our archiver writes it (docs/raw-format.md), in short."""
    day, seq = image.split("_")[2], int(image.split("_")[3])
    values: dict[str, Any] = {
        "OBSID": image, "DAYOBS": day, "SEQNUM": seq, "CONTRLLR": "O", "TIMESYS": "TAI",
        "IMGTYPE": "OBJECT", "REASON": "Science", "PROGRAM": "BLOCK-T17", "OBJECT": "field 7",
        "GROUPID": "2026-11-22T03:00:00.000", "CURINDEX": 1, "MAXINDEX": 3,
        "FILTER": "r_03", "FILTBAND": "r", "GRATING": "empty_1",
        "DATE-BEG": "2026-11-22T03:00:00.000", "DATE-END": "2026-11-22T03:00:30.000",
        "MJD-BEG": 61366.125, "MJD-END": 61366.125 + 30 / 86400,
        "EXPTIME": 30.0, "SHUTTIME": 30.0, "DARKTIME": 30.7, "AIRMASS": 1.21,
        "RA": 150.0, "DEC": -30.0, "RASTART": 150.001, "DECSTART": -30.001, "ROTPA": 12.5,
        "ELSTART": 56.0, "ELEND": 56.2, "AZSTART": 359.0, "AZEND": 1.0,
        "AIRTEMP": 11.5, "PRESSURE": 74000.0, "HUMIDITY": 21.0, "WINDSPD": 4.0,
        "WINDDIR": 200.0, "SEEING": 0.7, "FOCUSZ": 0.12, "DOMEAZ": 0.5,
    }  # fmt: skip
    values.update(changes)
    return values


def qc_row(fwhm: float = 0.8, zero_point: float | None = 28.0, **changes: Any) -> dict[str, Any]:
    """A detector's QC as the catalog gives it (BatchRecords.qc_of: ICD names)."""
    values: dict[str, Any] = {
        "psfFwhm": fwhm, "psfE1": 0.01, "psfE2": -0.02, "ellipticity": 0.022,
        "skyMean": 120.0, "skyRms": 11.0, "nSources": 300, "nPsfStars": 45,
        "zeroPoint": zero_point,
    }  # fmt: skip
    values.update(changes)
    return values


@pytest.fixture
def db(tmp_path: Path) -> Iterator[ConsDb]:
    consdb = ConsDb.open(archive_root=tmp_path)
    yield consdb
    consdb.close()


def rows(db: ConsDb, instrument: str, table: str) -> list[dict[str, Any]]:
    with db.engine(instrument).connect() as connection:
        result = connection.execute(sa.select(db.table(instrument, table)))
        return [dict(row._asdict()) for row in result]


# An image's rows from its headers.


def test_an_image_is_one_exposure_row_and_one_ccdexposure_row_per_file(db: ConsDb) -> None:
    warnings = db.record_image("LSSTComCam", {sensor: header() for sensor in COMCAM})
    assert warnings == []
    [exposure] = rows(db, "LSSTComCam", "exposure")
    assert (exposure["exposure_id"], exposure["day_obs"], exposure["seq_num"]) == (
        EXPOSURE_ID, 20261121, 42,
    )  # fmt: skip
    assert exposure["exposure_name"] == IMAGE
    ccds = sorted(rows(db, "LSSTComCam", "ccdexposure"), key=lambda row: row["detector"])
    assert [row["detector"] for row in ccds] == list(range(9))  # R22_S00 … R22_S22
    assert [row["ccdexposure_id"] for row in ccds] == [EXPOSURE_ID * 1000 + n for n in range(9)]


def test_the_exposure_row_has_the_schemas_names_and_units(db: ConsDb) -> None:
    db.record_image("LSSTComCam", {"R22_S11": header()})
    [row] = rows(db, "LSSTComCam", "exposure")
    assert row["obs_start"].isoformat() == "2026-11-22T03:00:00"  # TAI, as the header
    assert row["exp_midpt"].isoformat() == "2026-11-22T03:00:15"
    assert row["exp_midpt_mjd"] == pytest.approx(61366.125 + 15 / 86400)
    assert (row["physical_filter"], row["band"]) == ("r_03", "r")
    assert (row["img_type"], row["observation_reason"]) == ("science", "science")
    assert (row["science_program"], row["target_name"]) == ("BLOCK-T17", "field 7")
    assert (row["s_ra"], row["s_dec"]) == (150.001, -30.001)  # where the mount was
    assert min(row["azimuth"], 360 - row["azimuth"]) < 0.01  # 359° → 1°: through north
    assert row["altitude"] == pytest.approx(56.1, abs=0.01)  # the great circle between
    assert row["zenith_distance_start"] == pytest.approx(34.0)
    assert (row["exp_time"], row["shut_time"], row["dark_time"]) == (30.0, 30.0, 30.7)
    assert (row["cur_index"], row["max_index"], row["can_see_sky"]) == (1, 3, True)
    assert (row["pressure"], row["dimm_seeing"], row["airmass"]) == (74000.0, 0.7, 1.21)


def test_a_bias_has_no_sky_position_and_cannot_see_the_sky(db: ConsDb) -> None:
    db.record_image("LATISS", {"R00_S00": header("AT_O_20261121_000003", IMGTYPE="BIAS")})
    [row] = rows(db, "LATISS", "exposure")
    assert (row["img_type"], row["can_see_sky"], row["s_ra"], row["s_dec"]) == (
        "bias", False, None, None,
    )  # fmt: skip
    assert row["physical_filter"] == "r_03~empty"  # LATISS: filter~grating, as obs_lsst


def test_a_header_rebuilt_later_updates_the_rows(db: ConsDb) -> None:
    incomplete = header(AIRMASS=None, OBJECT=None, ELSTART=None)
    db.record_image("LSSTComCam", {"R22_S00": incomplete, "R22_S01": incomplete})
    db.record_image("LSSTComCam", {"R22_S00": header(), "R22_S01": header()})
    [row] = rows(db, "LSSTComCam", "exposure")
    assert (row["airmass"], row["target_name"], row["altitude_start"]) == (1.21, "field 7", 56.0)
    assert len(rows(db, "LSSTComCam", "ccdexposure")) == 2
    db.record_image("LSSTComCam", {"R22_S00": header(AIRMASS=1.3, OBJECT="field 8")})
    [row] = rows(db, "LSSTComCam", "exposure")
    assert (row["airmass"], row["target_name"]) == (1.3, "field 8")  # rebuilt: the new values


def test_a_file_without_its_header_erases_nothing(db: ConsDb) -> None:
    """A file archived before the header came, recorded after one that had it: what it
    lacks stays as the other file said."""
    db.record_image("LSSTComCam", {"R22_S00": header()})
    bare = {"OBSID": IMAGE, "DAYOBS": "20261121", "SEQNUM": 42}
    assert db.record_image("LSSTComCam", {"R22_S01": bare}) == []
    [row] = rows(db, "LSSTComCam", "exposure")
    assert (row["airmass"], row["physical_filter"], row["obs_start"].hour) == (1.21, "r_03", 3)
    assert len(rows(db, "LSSTComCam", "ccdexposure")) == 2


async def test_an_archived_files_own_header_fills_the_row(tmp_path: Path) -> None:
    """A LATISS image through the whole chain (telescope, camera, header service,
    archiver): its file's primary header, read back, records without a warning."""
    async with (
        observatory(MemoryBroker(), "consdb", tmp_path, index=1) as obs,
        obs.archiver.remote.stream("imageArchived") as archived,
    ):
        await obs.point(40.0, -70.0, 20.0)
        params = {"numImages": 1, "expTime": 0.2, "shutter": True, "imageType": "OBJECT",
                  "keyValueMap": "reason:test"}  # fmt: skip
        await obs.camera.remote.command("takeImages", params, timeout=60)
        event = (await archived.next(60)).data
        path = next(obs.archive.rglob("*.fits"))
    primary = fits.getheader(path)
    db = ConsDb.open(archive_root=tmp_path)
    try:
        assert db.record_image("LATISS", {"R00_S00": primary}) == []
        [row] = rows(db, "LATISS", "exposure")
        [ccd] = rows(db, "LATISS", "ccdexposure")
    finally:
        db.close()
    assert row["exposure_name"] == event["imageName"] == primary["OBSID"]
    assert (row["img_type"], row["observation_reason"], row["can_see_sky"]) == (
        "science", "test", True,
    )  # fmt: skip
    assert row["physical_filter"] == f"{primary['FILTER']}~{primary['GRATING']}".replace(
        "empty_1", "empty"
    )
    assert row["exp_time"] == pytest.approx(0.2)
    assert row["obs_start"].isoformat(timespec="milliseconds") == primary["DATE-BEG"][:23]
    assert row["airmass"] == pytest.approx(primary["AIRMASS"])
    assert row["altitude"] == pytest.approx((primary["ELSTART"] + primary["ELEND"]) / 2, abs=0.1)
    edges = [[0.5, 0.5], [4072.5, 0.5], [4072.5, 4000.5], [0.5, 4000.5]]  # pixels' outer edges
    with warnings.catch_warnings():  # DATE-OBS and MJD-OBS both given: astropy says so
        warnings.simplefilter("ignore", FITSFixedWarning)
        corners = WCS(primary).all_pix2world(edges, 1).tolist()
    found = [coordinate for point in polygon(ccd["s_region"]) for coordinate in point]
    assert found == pytest.approx([c for corner in corners for c in corner], abs=1e-4)


def polygon(region: str) -> list[tuple[float, float]]:
    assert region.startswith("Polygon ICRS ")
    numbers = [float(n) for n in region.split()[2:]]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def arcminutes(one: tuple[float, float], other: tuple[float, float]) -> float:
    """The angle between two positions (degrees), in arcminutes."""
    (ra1, dec1), (ra2, dec2) = (tuple(map(math.radians, p)) for p in (one, other))
    cosine = math.sin(dec1) * math.sin(dec2) + math.cos(dec1) * math.cos(dec2) * math.cos(ra1 - ra2)
    return math.degrees(math.acos(min(1.0, cosine))) * 60


def test_science_images_have_their_footprints_on_the_sky(db: ConsDb) -> None:
    pointing = Pointing(150.0, -30.0, 12.5)
    headers = {
        sensor: header(**detector_wcs(Camera.COMCAM, Detector.parse(sensor), pointing).keywords())
        for sensor in COMCAM
    }
    db.record_image("LSSTComCam", headers)
    [exposure] = rows(db, "LSSTComCam", "exposure")
    ccds = {
        row["detector"]: polygon(row["s_region"]) for row in rows(db, "LSSTComCam", "ccdexposure")
    }
    corners = {point for region in ccds.values() for point in region}
    hull = polygon(exposure["s_region"])
    assert len(hull) == 4  # the raft's outer corners: those of S00, S02, S20, S22
    assert set(hull) <= corners
    assert {number for number, region in ccds.items() if set(region) & set(hull)} == {0, 2, 6, 8}
    for region in ccds.values():  # a CCD is 4072 x 4000 pixels of 0.2": 13.57' by 13.33'
        first, second, third = region[:3]
        sides = sorted([arcminutes(first, second), arcminutes(second, third)])
        assert sides == pytest.approx([4000 * 0.2 / 60, 4072 * 0.2 / 60], rel=1e-4)
    flat = "CC_O_20261121_000043"
    db.record_image(
        "LSSTComCam", {s: dict(h, IMGTYPE="FLAT", OBSID=flat) for s, h in headers.items()}
    )
    regions = {row["exposure_name"]: row["s_region"] for row in rows(db, "LSSTComCam", "exposure")}
    assert regions[flat] is None  # science images only, as the observatory


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("AT_O_20261121_000001", 2026112100001),
        ("AT_C_20261121_000001", 2026112100001),  # CCS shares the OCS counter since 2023
        ("AT_C_20230101_000001", 3023010100001),  # … and was a thousand years on before
        ("AT_H_20261121_000001", 4026112100001),  # phosim: two thousand years on
        ("AT_S_20250101_000001", 7025010100001),
    ],
)
def test_exposure_ids_are_obs_lssts(image: str, expected: int) -> None:
    assert exposure_id(ImageName.parse(image)) == expected


def test_detector_numbers_are_obs_lssts() -> None:
    assert detector_number(Camera.LATISS, Detector("R00", "S00")) == 0
    assert detector_number(Camera.COMCAM, Detector("R22", "S22")) == 8
    assert detector_number(Camera.LSSTCAM, Detector("R01", "S00")) == 0
    assert detector_number(Camera.LSSTCAM, Detector("R22", "S11")) == 94
    assert detector_number(Camera.LSSTCAM, Detector("R43", "S22")) == 188


def test_the_fits_undefined_value_is_null_without_a_warning(db: ConsDb) -> None:
    primary = fits.Header(header())
    primary["AIRMASS"] = fits.card.Undefined()
    primary["OBJECT"] = fits.card.Undefined()
    warnings = db.record_image("LSSTComCam", {"R22_S00": primary})
    [row] = rows(db, "LSSTComCam", "exposure")
    assert (row["airmass"], row["target_name"], warnings) == (None, None, [])


def test_bad_header_values_are_null_and_each_is_named(db: ConsDb) -> None:
    bad = header(AIRMASS="high", SEEING=math.nan, OBJECT="x" * 5000, EXPTIME=math.inf,
                 PROGRAM="nul\x00", CURINDEX=2**40, **{"DATE-BEG": "yesterday"})  # fmt: skip
    warnings = db.record_image("LSSTComCam", {"R22_S00": bad})
    [row] = rows(db, "LSSTComCam", "exposure")
    for column in ("airmass", "dimm_seeing", "target_name", "exp_time", "science_program",
                   "cur_index", "obs_start", "exp_midpt"):  # fmt: skip
        assert row[column] is None, column
    text = "\n".join(warnings)
    for named in ("AIRMASS", "SEEING", "target_name", "EXPTIME", "science_program",
                  "cur_index", "DATE-BEG"):  # fmt: skip
        assert named in text, named
    assert len(text) < 3000  # a 5000-character value is not repeated in full


@pytest.mark.parametrize(
    ("instrument", "headers", "cause"),
    [
        ("HSC", {"R22_S00": header()}, "instrument"),
        ("LSSTComCam", {}, "no headers"),
        ("LSSTComCam", {"R22_S00": header(OBSID=None)}, "image name"),
        (
            "LSSTComCam",
            {"R22_S00": header(), "R22_S01": header("CC_O_20261121_000043")},
            "disagree",
        ),
        ("LATISS", {"R00_S00": header()}, "not a LATISS image"),
        ("LSSTComCam", {"R01_S00": header()}, "no detector R01_S00"),
    ],
)
def test_an_image_that_cannot_be_told_is_refused_naming_why(
    db: ConsDb, instrument: str, headers: dict[str, dict[str, Any]], cause: str
) -> None:
    with pytest.raises(ConsDbError, match=cause):
        db.record_image(instrument, headers)


_HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=300),
    st.binary(max_size=20), st.lists(st.integers(), max_size=3), st.just(10**400),
    st.just(-(2**63)), st.just("9" * 100_000),
)  # fmt: skip
_KEYS = sorted(k for k in header() if k != "OBSID")


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsDb]:
    consdb = ConsDb.open(archive_root=tmp_path_factory.mktemp("consdb"))
    yield consdb
    consdb.close()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=st.dictionaries(st.sampled_from(_KEYS), _HOSTILE, min_size=1))
def test_hostile_header_values_never_stop_an_image_being_recorded(
    shared_db: ConsDb, hostile: dict[str, Any]
) -> None:
    warnings = shared_db.record_image("LSSTComCam", {"R22_S00": header(**hostile)})
    assert all(isinstance(w, str) and IMAGE in w for w in warnings)
    with shared_db.engine("LSSTComCam").connect() as connection:
        exposure = shared_db.table("LSSTComCam", "exposure")
        found = connection.execute(sa.select(exposure.c.exposure_name)).scalars().all()
    assert found == [IMAGE]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    obsid=st.one_of(_HOSTILE, st.from_regex(r"CC_[A-Z]_[0-9]{8}_[0-9]{6}", fullmatch=True)),
    sensor=st.one_of(st.sampled_from(COMCAM), st.text(max_size=20)),
)
def test_a_hostile_image_name_or_sensor_is_recorded_or_refused_by_name(
    shared_db: ConsDb, obsid: Any, sensor: str
) -> None:
    refusal = ""
    try:
        shared_db.record_image("LSSTComCam", {sensor: header(OBSID=obsid)})
    except ConsDbError as refused:
        refusal = str(refused)
    assert refusal == "" or refusal.startswith("cannot record an image of 'LSSTComCam': ")


# Quick-look QC in the schema's units.


def test_quicklook_is_in_the_schemas_units(db: ConsDb) -> None:
    db.record_image("LSSTComCam", {"R22_S00": header(), "R22_S11": header()})
    qc = {"R22_S00": qc_row(0.8, 28.0), "R22_S11": qc_row(1.0, 28.2, nPsfStars=55)}
    assert db.record_quicklook("LSSTComCam", IMAGE, qc) == []
    ccds = {row["detector"]: row for row in rows(db, "LSSTComCam", "ccdvisit1_quicklook")}
    assert ccds[0]["psf_sigma"] == pytest.approx(0.8 / 2.3548 / 0.2, rel=1e-4)  # pixels
    assert ccds[0]["zero_point"] == pytest.approx(28.0 + 2.5 * math.log10(30.0))  # 1 count
    assert (ccds[0]["sky_bg"], ccds[0]["sky_noise"], ccds[0]["n_psf_star"]) == (120.0, 11.0, 45)
    assert ccds[4]["ccdvisit_id"] == EXPOSURE_ID * 1000 + 4
    [visit] = rows(db, "LSSTComCam", "visit1_quicklook")
    assert (visit["visit_id"], visit["n_inputs"]) == (EXPOSURE_ID, 2)
    assert visit["psf_sigma_median"] == pytest.approx(0.9 / 2.3548 / 0.2, rel=1e-4)
    assert visit["psf_sigma_min"] == pytest.approx(0.8 / 2.3548 / 0.2, rel=1e-4)
    assert (visit["n_psf_star_total"], visit["sky_bg_max"]) == (100, 120.0)


def test_latiss_quicklook_is_its_one_detectors(db: ConsDb) -> None:
    image = "AT_O_20261121_000007"
    db.record_image("LATISS", {"R00_S00": header(image)})
    db.record_quicklook("LATISS", image, {"R00_S00": qc_row(1.2, 27.0)})
    [visit] = rows(db, "LATISS", "visit1_quicklook")
    assert visit["psf_sigma"] == pytest.approx(1.2 / 2.3548 / 0.1, rel=1e-4)  # 0.1"/pixel
    assert visit["zero_point"] == pytest.approx(27.0 + 2.5 * math.log10(30.0))
    assert (visit["n_inputs"], visit["n_psf_star"], visit["sky_noise"]) == (1, 45, 11.0)


def test_quicklook_recorded_again_replaces_the_last(db: ConsDb) -> None:
    db.record_image("LSSTComCam", {"R22_S00": header()})
    db.record_quicklook("LSSTComCam", IMAGE, {"R22_S00": qc_row(0.8)})
    db.record_quicklook("LSSTComCam", IMAGE, {"R22_S00": qc_row(1.0, zero_point=None)})
    [ccd] = rows(db, "LSSTComCam", "ccdvisit1_quicklook")
    assert ccd["psf_sigma"] == pytest.approx(1.0 / 2.3548 / 0.2, rel=1e-4)
    assert ccd["zero_point"] is None
    assert len(rows(db, "LSSTComCam", "visit1_quicklook")) == 1


def test_quicklook_waits_for_the_image(db: ConsDb) -> None:
    with pytest.raises(ConsDbError, match="not in ConsDB"):
        db.record_quicklook("LSSTComCam", IMAGE, {"R22_S00": qc_row()})
    db.record_image("LSSTComCam", {"R22_S00": header()})
    warnings = db.record_quicklook("LSSTComCam", IMAGE, {"R22_S00": qc_row(), "R22_S01": qc_row()})
    assert any("R22_S01" in w and "no ccdexposure" in w for w in warnings)
    assert [row["detector"] for row in rows(db, "LSSTComCam", "ccdvisit1_quicklook")] == [0]


def test_bad_qc_values_are_null_and_named(db: ConsDb) -> None:
    db.record_image("LSSTComCam", {"R22_S00": header(EXPTIME=None)})
    bad = qc_row(fwhm=math.nan, skyMean="lots", nPsfStars=2.5)
    warnings = db.record_quicklook("LSSTComCam", IMAGE, {"R22_S00": bad})
    [ccd] = rows(db, "LSSTComCam", "ccdvisit1_quicklook")
    assert (ccd["psf_sigma"], ccd["sky_bg"], ccd["zero_point"], ccd["n_psf_star"]) == (
        None, None, None, None,
    )  # fmt: skip
    text = "\n".join(warnings)
    for named in ("psf_fwhm", "sky_mean", "exposure time"):
        assert named in text, named


def test_the_catalogs_qc_rows_go_in_as_they_are(db: ConsDb, tmp_path: Path) -> None:
    catalog = Catalog(sqlite_url(tmp_path / "catalog.sqlite"))
    try:
        batch = BatchRecords(catalog)
        batch.record_qc("job-1", {"imageName": IMAGE, "sensor": "R22_S00", **qc_row()}, 1.0)
        qc = batch.qc_of(IMAGE)
    finally:
        catalog.close()
    db.record_image("LSSTComCam", {"R22_S00": header()})
    assert db.record_quicklook("LSSTComCam", IMAGE, qc) == []
    [ccd] = rows(db, "LSSTComCam", "ccdvisit1_quicklook")
    assert ccd["psf_sigma"] == pytest.approx(0.8 / 2.3548 / 0.2, rel=1e-4)


_QC_KEYS = sorted(qc_row())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=st.dictionaries(st.sampled_from(_QC_KEYS), _HOSTILE, min_size=1))
def test_hostile_qc_values_never_stop_the_quicklook_being_recorded(
    shared_db: ConsDb, hostile: dict[str, Any]
) -> None:
    shared_db.record_image("LSSTComCam", {"R22_S00": header(), "R22_S11": header()})
    warnings = shared_db.record_quicklook(
        "LSSTComCam", IMAGE, {"R22_S00": qc_row(**hostile), "R22_S11": qc_row()}
    )
    assert all(IMAGE in w for w in warnings)
    with shared_db.engine("LSSTComCam").connect() as connection:
        table = shared_db.table("LSSTComCam", "ccdvisit1_quicklook")
        found = connection.execute(sa.select(table.c.detector).where(table.c.seq_num == 42))
        assert sorted(found.scalars()) == [0, 4]


# Opening.


def test_each_schema_is_a_sqlite_file_under_the_archive(db: ConsDb, tmp_path: Path) -> None:
    for name in ("cdb_latiss", "cdb_lsstcomcam", "cdb_lsstcam"):
        tables = sa.inspect(sa.create_engine(f"sqlite:///{tmp_path / 'consdb' / name}.sqlite3"))
        assert {"exposure", "ccdexposure", "visit1_quicklook"} <= set(tables.get_table_names())


def test_two_openers_at_once_both_get_the_schemas(tmp_path: Path) -> None:
    opened: list[ConsDb] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            opened.append(ConsDb.open(archive_root=tmp_path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (errors, len(opened)) == ([], 2)
    opened[0].record_image("LSSTCam", {"R22_S11": header("MC_O_20261121_000001")})
    assert rows(opened[1], "LSSTCam", "ccdexposure")[0]["detector"] == 94
    for consdb in opened:
        consdb.close()


def _open_and_record(root: str, seq: int, barrier: Any, results: Any) -> None:
    """In a process of its own: open ConsDB when the other process does, record."""
    barrier.wait(60)
    try:
        consdb = ConsDb.open(archive_root=Path(root))
        image = f"CC_O_20261121_{seq:06d}"
        consdb.record_image("LSSTComCam", {sensor: header(image) for sensor in COMCAM})
        consdb.close()
        results.put("ok")
    except BaseException as exc:
        results.put(repr(exc))


@pytest.mark.broker
def test_two_processes_opening_a_new_consdb_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [
        context.Process(target=_open_and_record, args=(str(tmp_path), seq, barrier, results))
        for seq in (1, 2)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(60)
    assert outcomes == ["ok", "ok"]
    db = ConsDb.open(archive_root=tmp_path)
    try:
        assert len(rows(db, "LSSTComCam", "exposure")) == 2
        assert len(rows(db, "LSSTComCam", "ccdexposure")) == 18
    finally:
        db.close()


def test_an_unreachable_database_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConsDbError, match=r"cannot open ConsDB \(postgresql"):
        ConsDb.open("postgresql://nobody:secret@127.0.0.1:1/none?connect_timeout=2",
                    archive_root=tmp_path)  # fmt: skip
    with pytest.raises(ConsDbError, match="not 'mysql'"):
        ConsDb.open("mysql://somewhere/db", archive_root=tmp_path)


def test_an_unknown_instrument_is_named(db: ConsDb) -> None:
    with pytest.raises(ConsDbError, match="no ConsDB schema for instrument 'HSC'"):
        db.table("HSC", "exposure")


# PostgreSQL: a schema per camera, as at the observatory.


@pytest.mark.broker
def test_postgresql_has_a_schema_per_camera(postgres_admin: str, tmp_path: Path) -> None:
    with postgres_database(postgres_admin) as url:
        first, second = (ConsDb.open(url, archive_root=tmp_path) for _ in range(2))
        try:
            first.record_image("LSSTComCam", {s: header() for s in COMCAM})
            first.record_image("LSSTComCam", {"R22_S00": header(AIRMASS=1.5)})
            second.record_quicklook("LSSTComCam", IMAGE, {"R22_S00": qc_row()})
            with pytest.raises(ConsDbError, match="not in ConsDB"):
                second.record_quicklook("LATISS", "AT_O_20261121_000001", {"R00_S00": qc_row()})
            engine = sa.create_engine(url)
            try:
                names = sa.inspect(engine).get_schema_names()
                assert {"cdb_latiss", "cdb_lsstcomcam", "cdb_lsstcam"} <= set(names)
                with engine.connect() as connection:
                    exposure = second.table("LSSTComCam", "exposure")
                    airmass = connection.execute(sa.select(exposure.c.airmass)).scalars().all()
                    quicklook = second.table("LSSTComCam", "ccdvisit1_quicklook")
                    sigma = connection.execute(sa.select(quicklook.c.psf_sigma)).scalar_one()
            finally:
                engine.dispose()
            assert airmass == [pytest.approx(1.5)]
            assert sigma == pytest.approx(0.8 / 2.3548 / 0.2, rel=1e-4)
        finally:
            first.close()
            second.close()
