"""Reading a raw's primary header the cheap way (its blocks only, values parsed when
used) gives what astropy reads, and a file that is not a readable FITS file is an
OSError naming it, whatever its bytes: registering refuses it with that reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from cscs.camera.geometry import Camera
from cscs.repository import Repository
from cscs.repository.headers import read_header_values, read_primary_header
from tests.support.raws import archive_image

COMCAM_IMAGE = "CC_O_20261121_000002"
_BLOCK = 2880


def test_the_header_read_is_astropy_s_reading_of_the_primary_hdu(tmp_path: Path) -> None:
    (path,) = archive_image(tmp_path, Camera.COMCAM, COMCAM_IMAGE, ["R22_S11"])
    expected = {
        card.keyword: None if isinstance(card.value, fits.card.Undefined) else card.value
        for card in fits.getheader(path, 0).cards
        if card.keyword not in ("COMMENT", "HISTORY", "")
    }
    assert read_primary_header(path) == expected
    lazy = read_header_values(path)
    assert dict(lazy) == expected
    assert lazy["OBSID"] == COMCAM_IMAGE
    assert "NAXIS1" not in lazy  # the primary HDU only: the pixels' extensions are not read


def test_a_header_spanning_many_blocks_is_read_whole(tmp_path: Path) -> None:
    header = fits.Header()
    for i in range(2000):  # ~56 blocks: past one read's worth
        header[f"K{i}"] = i
    path = tmp_path / "long.fits"
    fits.PrimaryHDU(header=header).writeto(path)
    values = read_primary_header(path)
    assert values["K0"] == 0
    assert values["K1999"] == 1999


def _fits_bytes(tmp_path: Path) -> bytes:
    (path,) = archive_image(tmp_path, Camera.COMCAM, COMCAM_IMAGE, ["R22_S11"])
    return path.read_bytes()


@pytest.mark.parametrize(
    ("cut", "why"),
    [
        (lambda data: data[:_BLOCK], "ends before its primary header's END card"),
        (lambda data: b"", "not a FITS file"),
        (lambda data: b"SIMPLE  =" + b" " * (_BLOCK * 3000), "no END card"),
        (lambda data: data.replace(b"END     ", b"ENX     ", 1), "cannot read the primary header"),
    ],
)
def test_a_file_without_a_whole_primary_header_is_an_os_error_naming_it(
    tmp_path: Path, cut: Callable[[bytes], bytes], why: str
) -> None:
    path = tmp_path / "bad.fits"
    path.write_bytes(cut(_fits_bytes(tmp_path)))
    with pytest.raises(OSError, match=why) as raised:
        read_primary_header(path)
    assert "bad.fits" in str(raised.value)


def test_a_value_astropy_cannot_read_refuses_the_file_naming_the_keyword(
    tmp_path: Path,
) -> None:
    data = bytearray(_fits_bytes(tmp_path))
    at = data.index(b"EXPTIME =")
    data[at : at + 80] = b"EXPTIME = 'never closed".ljust(80)
    path = tmp_path / "mangled.fits"
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="EXPTIME"):
        read_primary_header(path)
    with Repository.open(tmp_path / "archive") as repo:
        result = repo.register([path])
    assert result.registered == []
    assert "EXPTIME" in dict(result.refused)[path]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=4 * _BLOCK))
def test_any_bytes_are_read_or_refused_as_an_os_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("hostile") / "any.fits"
    path.write_bytes(b"SIMPLE  =" + data)
    failure: OSError | None = None
    try:
        values = read_primary_header(path)
    except OSError as exc:  # anything else escaping would fail the test
        failure = exc
    if failure is None:
        assert isinstance(values, dict)
    else:
        assert "any.fits" in str(failure)
