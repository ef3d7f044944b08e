"""The FITS writer and atomic files: what every archived file goes through."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st

from cscs.core.files import atomic_file
from cscs.core.fits import datasum, encode_checksum, write_raw_fits
from cscs.core.geometry import SEGMENTS

RNG = np.random.default_rng(5)
SEGMENT_DATA = [RNG.integers(0, 2**18, size=(2048, 576), dtype=np.int32) for _ in SEGMENTS]
EXTENSIONS = [
    ([(k, v, "") for k, v in s.keywords().items()], d)
    for s, d in zip(SEGMENTS, SEGMENT_DATA, strict=True)
]
PRIMARY = [("OBSID", "AT_O_20261121_000001", "image name"), ("AIRTEMP", None, "not collected"),
           ("EXPTIME", 15.0, "s"), ("DATE-OBS", "2026-11-21T03:00:00.000", "TAI")]  # fmt: skip


@pytest.mark.parametrize("compression", ["", "RICE_1"])
def test_written_files_verify_with_astropy(tmp_path: Path, compression: str) -> None:
    written = write_raw_fits(tmp_path / "a.fits", PRIMARY, EXTENSIONS, compression=compression)
    data = written.path.read_bytes()
    assert written.byte_size == len(data)
    assert written.md5 == hashlib.md5(data).hexdigest()
    if not compression:
        assert len(data) % 2880 == 0
    with fits.open(written.path, checksum=True) as hdus:  # mismatches warn: errors here
        assert hdus[0].header["OBSID"] == "AT_O_20261121_000001"
        assert hdus[0].header["AIRTEMP"] is None or isinstance(
            hdus[0].header["AIRTEMP"], fits.card.Undefined
        )
        for hdu, segment, pixels in zip(hdus[1:], SEGMENTS, SEGMENT_DATA, strict=True):
            assert hdu.header["EXTNAME"] == segment.name
            assert hdu.header["DATASEC"] == segment.datasec
            assert np.array_equal(hdu.data, pixels)
            if not compression:  # compressed: in the hidden table header, verified above
                assert hdu.header["CHECKSUM"]


def test_checksum_encoding_matches_astropy() -> None:
    hdu = fits.ImageHDU(SEGMENT_DATA[0])
    hdu.add_checksum()
    assert int(hdu.header["DATASUM"]) == datasum(SEGMENT_DATA[0].view(np.uint32))


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_checksum_encoding_is_printable_and_reversible_in_sum(value: int) -> None:
    text = encode_checksum(value)
    assert len(text) == 16
    assert all(c.isalnum() for c in text)


def test_an_interrupted_write_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    target = tmp_path / "night" / "file.fits"

    def write_until_the_disk_fills() -> None:
        with atomic_file(target) as stream:
            stream.write(b"x" * 10_000)
            raise OSError(28, "disk full (simulated)")

    with pytest.raises(OSError, match="disk full"):
        write_until_the_disk_fills()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary is gone too
    with atomic_file(target) as stream:
        stream.write(b"whole")
    assert target.read_bytes() == b"whole"


def test_bad_pixels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D int32"):
        write_raw_fits(tmp_path / "b.fits", PRIMARY, [([], np.zeros((4, 4), np.float32))])
    assert not (tmp_path / "b.fits").exists()
