"""The FITS writer and atomic files: what every archived file goes through."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st

from cscs.camera.checksum import Algorithm
from cscs.camera.files import atomic_file
from cscs.camera.fits import datasum, encode_checksum, write_raw_fits
from cscs.camera.geometry import SEGMENTS
from cscs.camera.verify import verify_raw_file
from tests.support.pixels import sums_of

RNG = np.random.default_rng(5)
SEGMENT_DATA = [RNG.integers(0, 2**18, size=(2048, 576), dtype=np.int32) for _ in SEGMENTS]
EXTENSIONS = [
    ([(k, v, "") for k, v in s.keywords().items()], d)
    for s, d in zip(SEGMENTS, SEGMENT_DATA, strict=True)
]
PRIMARY = [("OBSID", "AT_O_20261121_000001", "image name"), ("AIRTEMP", None, "not collected"),
           ("EXPTIME", 15.0, "s"), ("DATE-OBS", "2026-11-21T03:00:00.000", "TAI")]  # fmt: skip


@pytest.mark.parametrize("compression", ["", "RICE_1"])
@pytest.mark.parametrize("checksum", ["adler32", "md5"])
def test_written_files_verify_with_astropy(
    tmp_path: Path, compression: str, checksum: Algorithm
) -> None:
    written = write_raw_fits(
        tmp_path / "a.fits",
        PRIMARY,
        EXTENSIONS,
        datasums=sums_of(EXTENSIONS),
        compression=compression,
        checksum=checksum,
    )
    data = written.path.read_bytes()
    assert written.byte_size == len(data)
    expected = (
        f"{zlib.adler32(data):08x}" if checksum == "adler32" else hashlib.md5(data).hexdigest()
    )
    assert (written.checksum, written.checksum_algorithm) == (expected, checksum)
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


def test_a_value_that_contains_a_checksum_card_leaves_the_header_intact(tmp_path: Path) -> None:
    """A target name that reads like a CHECKSUM or DATASUM card (anyone can publish the
    target) stays a value: the sums go in their own cards and the file verifies."""
    primary = [*PRIMARY, ("OBJECT", "CHECKSUM= 'x' DATASUM = '0'", "target")]
    written = write_raw_fits(tmp_path / "a.fits", primary, EXTENSIONS, datasums=sums_of(EXTENSIONS))
    assert verify_raw_file(written.path, written.byte_size, written.checksum, "adler32") == []
    with fits.open(written.path, checksum=True) as hdus:
        assert hdus[0].header["OBJECT"] == "CHECKSUM= 'x' DATASUM = '0'"


def test_the_verifier_passes_a_whole_file_and_names_each_damage(tmp_path: Path) -> None:
    """One flipped bit in a segment's pixels: the data unit checksum and the Adler-32 both
    say so; a truncated file is not readable; an announcement of the wrong size is caught."""
    written = write_raw_fits(tmp_path / "a.fits", PRIMARY, EXTENSIONS, datasums=sums_of(EXTENSIONS))
    path, size, md5 = written.path, written.byte_size, written.checksum
    assert verify_raw_file(path, size, md5, "adler32") == []
    assert verify_raw_file(path, size + 1, md5, "adler32") == [
        f"{path}: {size} bytes, {size + 1} announced"
    ]
    data = bytearray(path.read_bytes())
    data[size // 2] ^= 0x10
    path.write_bytes(data)
    problems = verify_raw_file(path, size, md5, "adler32")
    assert any("Adler-32" in p for p in problems), problems
    assert any("checksum" in p.lower() and "Adler-32" not in p for p in problems), problems
    path.write_bytes(data[: size // 3])
    assert any("not a readable FITS file" in p or "extensions" in p
               for p in verify_raw_file(path, size, md5, "adler32"))  # fmt: skip
    gone = verify_raw_file(tmp_path / "gone.fits", size, md5, "adler32")
    assert gone == [f"{tmp_path / 'gone.fits'}: cannot read it: No such file or directory"]


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
        write_raw_fits(
            tmp_path / "b.fits", PRIMARY, [([], np.zeros((4, 4), np.float32))], datasums=[0]
        )
    assert not (tmp_path / "b.fits").exists()


def verify(
    path: Path, extensions: list[tuple[list[Any], np.ndarray[Any, Any]]], checksum: str
) -> None:
    """What a reader of the archive relies on: the checksum announced (Adler-32), every
    HDU's checksums, and the pixels as they came from the DAQ."""
    assert f"{zlib.adler32(path.read_bytes()):08x}" == checksum
    with fits.open(path, checksum=True) as hdus:  # a mismatch warns: an error here
        assert len(hdus) == len(extensions) + 1
        for hdu, (_, pixels) in zip(hdus[1:], extensions, strict=True):
            assert np.array_equal(hdu.data, pixels)


def test_a_buffer_reused_for_a_smaller_file_leaves_no_trace_of_the_bigger(
    tmp_path: Path,
) -> None:
    big = write_raw_fits(tmp_path / "big.fits", PRIMARY, EXTENSIONS, datasums=sums_of(EXTENSIONS))
    odd = [
        ([("EXTNAME", f"S{i}", "")], RNG.integers(-(2**31), 2**31 - 1, (7, 13 + i), np.int32))
        for i in range(3)
    ]
    small = write_raw_fits(tmp_path / "small.fits", PRIMARY, odd, datasums=sums_of(odd))
    verify(small.path, odd, small.checksum)  # padding zeroed, not the big file's pixels
    verify(big.path, EXTENSIONS, big.checksum)


@given(
    shapes=st.lists(
        st.tuples(st.integers(1, 40), st.integers(1, 40))
        | st.tuples(st.integers(100, 200), st.integers(50, 120)),  # past the 32 KB blocks
        min_size=0,
        max_size=4,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_segment_shapes_and_values_are_written_whole_and_verify(
    shapes: list[tuple[int, int]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    extensions = [
        ([("EXTNAME", f"S{i}", "")], rng.integers(-(2**31), 2**31 - 1, shape, dtype=np.int32))
        for i, shape in enumerate(shapes)
    ]
    with tempfile.TemporaryDirectory() as directory:
        written = write_raw_fits(
            Path(directory) / "h.fits", PRIMARY, extensions, datasums=sums_of(extensions)
        )
        assert written.byte_size == written.path.stat().st_size
        assert written.byte_size % 2880 == 0
        verify(written.path, extensions, written.checksum)


@pytest.mark.parametrize("refused_at", ["open", "write"])
def test_a_file_system_without_direct_io_gets_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused_at: str
) -> None:
    """tmpfs and some network file systems refuse O_DIRECT with EINVAL, at open or at
    the first write; the archive must not care."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        pytest.skip("this platform has no O_DIRECT: every write is buffered already")
    real_open, real_write = os.open, os.write
    direct_fds: set[int] = set()

    def open_(path: Any, flags: int, mode: int = 0o777) -> int:
        if flags & direct and refused_at == "open":
            raise OSError(errno.EINVAL, "Invalid argument")
        fd = real_open(path, flags, mode)
        (direct_fds.add if flags & direct else direct_fds.discard)(fd)  # numbers are reused
        return fd

    def write(fd: int, data: Any) -> int:
        if fd in direct_fds:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", open_)  # what cscs.camera.files calls
    monkeypatch.setattr(os, "write", write)
    written = write_raw_fits(tmp_path / "a.fits", PRIMARY, EXTENSIONS, datasums=sums_of(EXTENSIONS))
    monkeypatch.undo()
    verify(written.path, EXTENSIONS, written.checksum)
    assert [p.name for p in tmp_path.iterdir()] == ["a.fits"]


def test_a_disk_filling_mid_file_leaves_nothing_and_the_next_file_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = 0

    def fill_after_one_chunk(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fill_after_one_chunk)
    with pytest.raises(OSError, match="No space left"):
        write_raw_fits(
            tmp_path / "night" / "a.fits", PRIMARY, EXTENSIONS, datasums=sums_of(EXTENSIONS)
        )
    monkeypatch.undo()
    assert calls > 1  # it did fail part-way through, not before the first byte
    assert list((tmp_path / "night").iterdir()) == []  # no file, no temporary
    written = write_raw_fits(
        tmp_path / "night" / "a.fits", PRIMARY, EXTENSIONS, datasums=sums_of(EXTENSIONS)
    )
    verify(written.path, EXTENSIONS, written.checksum)
