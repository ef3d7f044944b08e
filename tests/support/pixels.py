"""Pixels made by a test, vouched for by the test: the data sums a DAQ would have sent
with them (:func:`~cscs.camera.fits.write_raw_fits` requires them, ADR 0041)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy.typing as npt

from cscs.camera.datasums import segment_datasums

__all__ = ["sums_of"]


def sums_of(extensions: Sequence[tuple[Any, npt.NDArray[Any]]]) -> tuple[int, ...]:
    """The data sums of ``(cards, pixels)`` extensions, as their source would send them."""
    return segment_datasums([pixels for _, pixels in extensions])
