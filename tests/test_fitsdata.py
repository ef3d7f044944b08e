"""The one pass over a raw file's pixels (``cscs.camera._fitsdata``, ADR 0035): the same
bytes and sums as numpy's byte swap and ones'-complement sum, and nothing written where
it should not be."""

from __future__ import annotations

import mmap
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cscs.camera._fitsdata import adler32, lay_out
from cscs.camera.checksum import adler32_combine
from cscs.camera.fits_header import datasum

BLOCK = 2880


def _padded(nbytes: int) -> int:
    return -(-nbytes // BLOCK) * BLOCK


@given(
    sizes=st.lists(st.integers(0, 3000) | st.integers(8000, 20000), min_size=0, max_size=5),
    seed=st.integers(0, 2**32 - 1),
    gap=st.integers(0, 3).map(lambda n: 4 * n),
    adler=st.booleans(),
)
def test_each_segment_is_laid_out_big_endian_with_its_datasum(
    sizes: list[int], seed: int, gap: int, adler: bool
) -> None:
    rng = np.random.default_rng(seed)
    segments = [rng.integers(-(2**31), 2**31 - 1, n, dtype=np.int32) for n in sizes]
    offsets, position = [], gap
    for segment in segments:
        offsets.append(position)
        position += _padded(segment.nbytes) + gap
    staging = bytearray(b"\xaa" * (position + 8))  # stale bytes of an earlier, bigger file
    sums, adlers = lay_out(staging, offsets, segments, adler)
    assert list(sums) == [datasum(s.view(np.uint32)) for s in segments]
    # Fused, over blocks (32 KB: segments here of 0-12 KB and 32-80 KB): each segment's
    # Adler-32 is zlib's of its laid-out bytes and padding.
    expected = [
        zlib.adler32(staging[o : o + _padded(s.nbytes)])
        for o, s in zip(offsets, segments, strict=True)
    ]
    assert list(adlers) == (expected if adler else [])
    for offset, segment in zip(offsets, segments, strict=True):
        end = offset + segment.nbytes
        assert bytes(staging[offset:end]) == segment.astype(">i4").tobytes()
        assert bytes(staging[end : offset + _padded(segment.nbytes)]) == bytes(
            _padded(segment.nbytes) - segment.nbytes
        )  # the FITS block's rest zeroed
    written = {i for o, s in zip(offsets, segments, strict=True)
               for i in range(o, o + _padded(s.nbytes))}  # fmt: skip
    assert all(staging[i] == 0xAA for i in range(len(staging)) if i not in written)


def test_the_sum_carries_around_like_the_fits_sum() -> None:
    """All ones: the 64-bit total folds back into 32 bits with its carries."""
    segment = np.full(1000, -1, dtype=np.int32)
    staging = mmap.mmap(-1, _padded(segment.nbytes))
    assert lay_out(staging, [0], [segment]) == ((datasum(segment.view(np.uint32)),), ())


@given(data=st.binary(max_size=40_000) | st.binary(max_size=8).map(lambda b: b * 9000),
       start=st.integers(1, 2**32 - 1))  # fmt: skip
def test_the_kernels_adler32_is_zlibs(data: bytes, start: int) -> None:
    """Vectorised (32 bytes a step, chunks below 5552 bytes) or scalar: zlib's value, for
    any length, start value and bytes (long runs of 0xFF stress the lanes' bounds)."""
    assert adler32(data, start) == zlib.adler32(data, start)


@given(data=st.binary(max_size=3000), cut=st.integers(0, 3000), pad=st.integers(0, 70_000))
def test_adler32_combine_is_the_adler32_of_the_concatenation(
    data: bytes, cut: int, pad: int
) -> None:
    first, second = data[:cut], data[cut:] + bytes(pad)  # lengths past 65521 too
    combined = adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
    assert combined == zlib.adler32(first + second)


@pytest.mark.parametrize(
    ("offset", "segment", "why"),
    [
        (0, np.zeros(3, np.int16), "whole 32-bit words"),
        (2, np.zeros(4, np.int32), "whole 32-bit words"),
        (-4, np.zeros(4, np.int32), "beyond"),
        (BLOCK, np.zeros(4, np.int32), "beyond"),  # its padding would leave the buffer
    ],
)
def test_what_would_write_outside_the_buffer_or_split_a_word_is_refused(
    offset: int, segment: np.ndarray, why: str
) -> None:
    staging = bytearray(BLOCK + 8)
    with pytest.raises(ValueError, match=why):
        lay_out(staging, [offset], [segment])
    assert staging == bytearray(BLOCK + 8)


def test_a_read_only_buffer_or_a_strided_segment_is_refused() -> None:
    with pytest.raises(BufferError):
        lay_out(bytes(BLOCK), [0], [np.zeros(4, np.int32)])
    with pytest.raises((ValueError, BufferError)):
        lay_out(bytearray(BLOCK), [0], [np.zeros((4, 4), np.int32)[:, 1]])
    with pytest.raises(ValueError, match="as many offsets"):
        lay_out(bytearray(BLOCK), [0, 0], [np.zeros(4, np.int32)])
