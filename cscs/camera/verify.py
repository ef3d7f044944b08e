"""Checking an archived raw file as a reader would: the one verifier the demo, the tests
and any audit of the archive use.

A file is whole when its size and checksum are what was announced, astropy reads it
with every HDU's ``CHECKSUM``/``DATASUM`` correct, and it holds a primary HDU and the
16 amplifier segments, in file order.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from astropy.io import fits

from cscs.camera.checksum import Algorithm, file_checksum
from cscs.camera.geometry import SEGMENT_NAMES

__all__ = ["verify_raw_file"]

_NAMES = {"adler32": "Adler-32", "md5": "MD5"}


def verify_raw_file(path: Path, byte_size: int, checksum: str, algorithm: Algorithm) -> list[str]:
    """What is wrong with the file at ``path`` (empty: nothing), each problem a sentence
    naming the file. ``checksum`` is the announced (or catalogued) one, by ``algorithm``.

    The file is read twice, for the checksum and by astropy: faster than reading it once
    and handing astropy the bytes (202 against 364 ms for a 75 MB LATISS file with MD5,
    measured 2026-11-21), since the second read comes from the page cache."""
    try:
        size = path.stat().st_size
        digest = file_checksum(algorithm, path)
    except OSError as exc:
        return [f"{path}: cannot read it: {exc.strerror or exc}"]
    problems = []
    if size != byte_size:
        problems.append(f"{path}: {size} bytes, {byte_size} announced")
    if digest != checksum:
        problems.append(f"{path}: {_NAMES[algorithm]} {digest}, {checksum} announced")
    with open(path, "rb") as stream, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(stream, checksum=True, memmap=False) as hdus:
                names = [hdu.header.get("EXTNAME", "") for hdu in hdus[1:]]
        except Exception as exc:  # a damaged file makes astropy raise all sorts of things
            return [*problems, f"{path}: not a readable FITS file: {type(exc).__name__}: {exc}"]
    problems += [f"{path}: {w.message}" for w in caught if "checksum" in str(w.message).lower()]
    if names != list(SEGMENT_NAMES):
        problems.append(f"{path}: extensions {names}, expected {list(SEGMENT_NAMES)}")
    return problems
