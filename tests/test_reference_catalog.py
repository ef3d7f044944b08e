"""The reference catalog image-qc measures zero points against: shards read as written,
cones cut right, and a directory anyone could have written into read without surprise
(a broken shard is an error naming it; a header no WCS can be made of is no reference)."""

from __future__ import annotations

import math
from pathlib import Path

import fitsio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cscs.camera.geometry import Camera
from cscs.camera.sky import Pointing, detector_wcs
from cscs.ocs_batch.refcat import (
    detector_reference,
    load_reference_catalog,
    write_reference_shard,
)

RNG = np.random.default_rng(5)


def stars(count: int, ra: float, dec: float, spread: float) -> tuple[np.ndarray, np.ndarray]:
    return ra + RNG.uniform(-spread, spread, count), dec + RNG.uniform(-spread, spread, count)


def test_shards_are_one_catalog_and_a_band_a_shard_lacks_is_unknown_there(
    tmp_path: Path,
) -> None:
    ra1, dec1 = stars(300, 0.2, -30.0, 0.5)  # across RA 0
    ra1 %= 360.0
    ra2, dec2 = stars(200, 0.1, -30.2, 0.3)
    write_reference_shard(tmp_path / "a.fits", ra1, dec1, {"r": np.full(300, 17.0),
                                                          "g": np.full(300, 17.5)})  # fmt: skip
    write_reference_shard(tmp_path / "b.fits", ra2, dec2, {"r": np.full(200, 18.0)})
    catalog = load_reference_catalog(tmp_path)
    assert catalog is not None
    assert (len(catalog), catalog.shards, sorted(catalog.magnitudes)) == (500, 2, ["g", "r"])

    ra, dec = np.concatenate([ra1, ra2]), np.concatenate([dec1, dec2])
    for band, expected_from in (("r", slice(None)), ("g", slice(0, 300))):
        cone = catalog.near(359.95, -30.1, 0.25, band)
        a, d = np.radians(ra[expected_from]), np.radians(dec[expected_from])
        a0, d0 = math.radians(359.95), math.radians(-30.1)
        cos = np.sin(d) * math.sin(d0) + np.cos(d) * math.cos(d0) * np.cos(a - a0)
        inside = np.degrees(np.arccos(np.clip(cos, -1, 1))) <= 0.25
        assert len(cone) == int(inside.sum()) > 0
        assert np.isfinite(cone.magnitude).all()
    assert len(catalog.near(0.0, -30.0, 1.0, "z")) == 0  # no such band: no stars


def test_no_directory_or_no_shard_is_no_catalog(tmp_path: Path) -> None:
    assert load_reference_catalog(tmp_path / "absent") is None
    (tmp_path / ".hidden.fits").write_bytes(b"half a shard being written")
    (tmp_path / "notes.txt").write_text("not a shard")
    assert load_reference_catalog(tmp_path) is None


def test_rows_not_on_the_sky_are_dropped(tmp_path: Path) -> None:
    ra = np.array([10.0, np.nan, 10.0, 370.0])
    dec = np.array([-30.0, -30.0, 95.0, -30.0])
    write_reference_shard(tmp_path / "s.fits", ra, dec, {"r": np.full(4, 16.0)})
    catalog = load_reference_catalog(tmp_path)
    assert catalog is not None
    assert sorted(catalog.ra.tolist()) == [10.0, 10.0]  # 370 is 10


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (np.zeros(3, dtype=[("x", "f8"), ("y", "f8")]), "no ra and dec"),
        (np.zeros(3, dtype=[("ra", "S8"), ("dec", "f8")]), "not a reference table"),
        (np.zeros((4, 4), dtype=np.float32), "not a reference table"),  # an image
        (np.zeros(3, dtype=[("ra", "f8"), ("dec", "f8", (3,))]), "not one value per star"),
    ],
)
def test_a_shard_that_is_not_one_is_an_error_naming_it(
    tmp_path: Path, content: np.ndarray, reason: str
) -> None:
    fitsio.write(str(tmp_path / "bad.fits"), content, clobber=True)
    with pytest.raises(ValueError, match=f"bad.fits.*{reason}"):
        load_reference_catalog(tmp_path)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=6000))
def test_any_bytes_in_a_shard_are_a_value_error(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / "shard.fits").write_bytes(garbage)
    with pytest.raises(ValueError, match=r"shard\.fits"):
        load_reference_catalog(tmp_path)


HEADER_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.text(max_size=20),
    st.floats(allow_nan=True, allow_infinity=True),
)  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(
        st.sampled_from(["CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1",
                         "CD2_2", "CD1_2", "CUNIT1", "EXPTIME", "FILTBAND", "RADESYS"]),
        HEADER_VALUES,
    )
)  # fmt: skip
def test_a_header_no_wcs_can_be_made_of_gives_no_reference(
    tmp_path_factory: pytest.TempPathFactory, changes: dict[str, object]
) -> None:
    directory = tmp_path_factory.getbasetemp() / "refcat-hostile"
    if not directory.exists():
        ra, dec = stars(50, 10.0, -30.0, 0.2)
        write_reference_shard(directory / "s.fits", ra, dec, {"r": np.full(50, 17.0)})
    catalog = load_reference_catalog(directory)
    assert catalog is not None
    wcs = detector_wcs(Camera.COMCAM, Camera.COMCAM.detector("R22_S11"), Pointing(10, -30, 0))
    header: dict[str, object] = dict(wcs.keywords())
    header.update(EXPTIME=30.0, FILTBAND="r")
    header.update(changes)
    reference = detector_reference(header, catalog, 0.2, 2.0)
    if reference is not None:
        assert len(reference.x) == len(reference.y) == len(reference.magnitude)
        assert reference.exposure_time > 0


def test_a_directory_that_cannot_be_listed_is_an_error_naming_it(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "refcat"
    not_a_directory.write_text("a file")
    with pytest.raises(ValueError, match="cannot list it"):
        load_reference_catalog(not_a_directory)


def test_the_band_is_read_as_any_case_and_a_distorted_wcs_is_not_used(tmp_path: Path) -> None:
    ra, dec = stars(200, 10.0, -30.0, 0.1)
    write_reference_shard(tmp_path / "s.fits", ra, dec, {"r": np.full(200, 17.0)})
    catalog = load_reference_catalog(tmp_path)
    assert catalog is not None
    wcs = detector_wcs(Camera.COMCAM, Camera.COMCAM.detector("R22_S11"), Pointing(10, -30, 0))
    header: dict[str, object] = dict(wcs.keywords(), EXPTIME=30.0, FILTBAND="R")
    reference = detector_reference(header, catalog, 0.2, 2.0)
    assert reference is not None
    assert len(reference.x) > 50
    # SIP terms this reader does not apply: no reference rather than stars misplaced.
    header.update(CTYPE1="RA---TAN-SIP", CTYPE2="DEC--TAN-SIP")
    assert detector_reference(header, catalog, 0.2, 2.0) is None


def test_the_simulator_will_not_mix_two_skies_in_one_catalog(tmp_path: Path) -> None:
    from sim.daq.reference import write_field_shards
    from sim.daq.sky_catalog import StarCounts

    counts = StarCounts(8000.0, 14.0, 19.75)
    assert write_field_shards(tmp_path, 10.0, -30.0, 0.1, counts, seed=0) > 0
    assert write_field_shards(tmp_path, 10.0, -30.0, 0.1, counts, seed=0) == 0  # once each
    with pytest.raises(ValueError, match="another simulated sky"):
        write_field_shards(tmp_path, 10.0, -30.0, 0.1, counts, seed=1)
