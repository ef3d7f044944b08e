"""What a reader of the DAQ gets, and the interface any DAQ reader offers.

:class:`DaqReader` is what the archiver needs of a DAQ: the ZeroMQ
:class:`~cscs.daq.client.DaqClient` implements it, and a test passes a fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from cscs.camera.datasums import DataSumMismatchError, segment_datasums, verify_segments
from cscs.camera.geometry import SEGMENT_NAMES
from cscs.daq.errors import ChecksumMismatchError

__all__ = ["DaqReader", "ImageInfo", "Pixels", "SensorPixels"]

Pixels = npt.NDArray[np.int32]


@dataclass(frozen=True)
class ImageInfo:
    name: str
    sensors: tuple[str, ...]
    missing_sensors: tuple[str, ...]
    complete: bool
    byte_size: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class SensorPixels:
    """One detector's raw segments in file order, and what each must sum to.

    ``datasums`` are the segments' FITS ``DATASUM`` values as the DAQ computed them when
    the pixels entered its buffer (ADR 0041). The pixels are verified against them where
    they are used, in the pass that uses them: the raw writer compares them with the
    sums of its one pass (:func:`~cscs.camera.fits.write_raw_fits` requires them);
    anything else that uses the pixels calls :meth:`verify` first.
    """

    image: str
    sensor: str
    segments: tuple[Pixels, ...]
    datasums: tuple[int, ...]

    @classmethod
    def trusted(cls, image: str, sensor: str, segments: Sequence[Pixels]) -> SensorPixels:
        """Pixels made in this process (a simulation, a test, a file re-read with its
        checksums verified), their sums taken from them: nothing came over a wire."""
        segments = tuple(segments)
        return cls(image, sensor, segments, segment_datasums(segments))

    def verify(self) -> None:
        """ChecksumMismatchError (retriable: read the sensor again) naming the first
        segment whose pixels do not sum to what the DAQ sent."""
        try:
            verify_segments(self.segments, self.datasums)
        except DataSumMismatchError as exc:
            raise self.mismatch(exc) from None

    def mismatch(self, exc: DataSumMismatchError) -> ChecksumMismatchError:
        """The DAQ's error for a segment that did not sum to its ``DATASUM``."""
        name = SEGMENT_NAMES[exc.segment] if exc.segment < len(SEGMENT_NAMES) else exc.segment
        return ChecksumMismatchError(
            self.image, self.sensor,
            f"segment {name} is corrupt: data sum {exc.got} != {exc.expected} sent by the DAQ",
        )  # fmt: skip

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.segments)


class DaqReader(Protocol):
    """Lists the images a DAQ holds and reads one sensor's pixels with their sums; every failure
    is a :class:`~cscs.daq.errors.DaqError` naming the image, the sensor and the cause."""

    @property
    def endpoint(self) -> str:
        """Where the pixels come from (recorded as each file's provenance)."""
        ...

    async def list_images(self) -> list[ImageInfo]:
        """Every image in the DAQ's buffer, oldest first."""
        ...

    async def read_sensor(self, image: str, sensor: str) -> SensorPixels:
        """All 16 segments of one detector, in file order, with the sums they must have
        (not yet checked against them: :class:`SensorPixels`)."""
        ...

    async def close(self) -> None: ...
