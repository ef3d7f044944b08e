from collections.abc import Sequence
from typing import Any

from _typeshed import ReadableBuffer, WriteableBuffer
from numpy.typing import NDArray

def lay_out(
    staging: WriteableBuffer,
    offsets: Sequence[int],
    segments: Sequence[ReadableBuffer | NDArray[Any]],
    adler: bool = False,
    /,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Each segment's 32-bit words big-endian into ``staging`` at its offset (the rest of
    its last FITS block zeroed); the segments' DATASUMs (ones'-complement sums) and, with
    ``adler``, each segment's Adler-32 of its laid-out bytes and padding (else empty)."""

def adler32(data: ReadableBuffer, value: int = 1, /) -> int:
    """Adler-32 of ``data`` continuing from ``value`` (vectorised where the CPU can)."""

def segment_sums(segments: Sequence[ReadableBuffer | NDArray[Any]]) -> tuple[int, ...]:
    """Each segment's DATASUM (the ones'-complement sum of its native 32-bit words)."""
