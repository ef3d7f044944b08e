"""Checking an archived raw file as a reader would: the one verifier the demo, the tests
and any audit of the archive use.

A file is whole when its size and checksum are what was announced, astropy reads it
with every HDU's ``CHECKSUM``/``DATASUM`` correct, and it holds a primary HDU and the
16 amplifier segments, in file order.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

from astropy.io import fits

from cscs.camera.geometry import SEGMENT_NAMES

__all__ = ["verify_raw_file"]


def verify_raw_file(path: Path, byte_size: int, md5: str) -> list[str]:
    """What is wrong with the file at ``path`` (empty: nothing), each problem a sentence
    naming the file. The file is read once (a raw file is ~75 MB)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [f"{path}: cannot read it: {exc.strerror or exc}"]
    problems = []
    if len(data) != byte_size:
        problems.append(f"{path}: {len(data)} bytes, {byte_size} announced")
    digest = hashlib.md5(data).hexdigest()
    if digest != md5:
        problems.append(f"{path}: MD5 {digest}, {md5} announced")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(io.BytesIO(data), checksum=True) as hdus:
                names = [hdu.header.get("EXTNAME", "") for hdu in hdus[1:]]
        except Exception as exc:  # a damaged file makes astropy raise all sorts of things
            return [*problems, f"{path}: not a readable FITS file: {type(exc).__name__}: {exc}"]
    problems += [f"{path}: {w.message}" for w in caught if "checksum" in str(w.message).lower()]
    if names != list(SEGMENT_NAMES):
        problems.append(f"{path}: extensions {names}, expected {list(SEGMENT_NAMES)}")
    return problems
