"""The FITS data sums of raw pixels, and the check of pixels against the sums the DAQ
sent with them (ADR 0041).

The DAQ's per-segment integrity check *is* the segment's ``DATASUM``: the 32-bit
ones'-complement sum of its words, computed by the DAQ once when the pixels entered its
buffer. The raw writer gets it from the same pass that lays the pixels out
(:func:`~cscs.camera.fits.write_raw_fits`), so the check costs no pass of its own;
whatever does not lay pixels out (a tile-compressed file, a reader that only looks)
sums them here, in C, without copying them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cscs.camera._fitsdata import segment_sums

__all__ = [
    "MAX_DATASUM",
    "DataSumMismatchError",
    "check_datasums",
    "segment_datasums",
    "verify_segments",
]

#: The largest data sum: a ones'-complement sum of 32-bit words.
MAX_DATASUM = 2**32 - 1


class DataSumMismatchError(ValueError):
    """A segment's pixels do not sum to what their source said: corrupted on the way.
    ``segment``: its index in file order."""

    def __init__(self, segment: int, got: int, expected: int) -> None:
        super().__init__(f"segment {segment}: data sum {got} != {expected} sent with it")
        self.segment = segment
        self.got = got
        self.expected = expected


def segment_datasums(segments: Sequence[npt.NDArray[Any]]) -> tuple[int, ...]:
    """Each segment's ``DATASUM`` (its native 32-bit words'), one C pass, GIL released."""
    for pixels in segments:
        if pixels.dtype.itemsize != 4 or not pixels.dtype.isnative:
            raise ValueError(f"segments must be native 32-bit words, got {pixels.dtype}")
    return segment_sums([np.ascontiguousarray(p) for p in segments])


def check_datasums(got: Sequence[int], expected: Sequence[int]) -> None:
    """DataSumMismatchError for the first segment whose sum is not the expected one."""
    if len(got) != len(expected):
        raise ValueError(f"{len(expected)} expected data sums for {len(got)} segments")
    for index, (have, want) in enumerate(zip(got, expected, strict=True)):
        if have != want:
            raise DataSumMismatchError(index, have, want)


def verify_segments(segments: Sequence[npt.NDArray[Any]], expected: Sequence[int]) -> None:
    """The segments' sums checked against ``expected`` (DataSumMismatchError)."""
    check_datasums(segment_datasums(segments), expected)
