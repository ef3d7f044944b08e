"""What a reader of the DAQ gets, and the interface any DAQ reader offers.

:class:`DaqReader` is what the archiver needs of a DAQ: the ZeroMQ
:class:`~cscs.daq.client.DaqClient` implements it, and a test passes a fake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

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
    """One detector's raw segments, verified, in file order."""

    image: str
    sensor: str
    segments: tuple[Pixels, ...]
    checksums: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.segments)


class DaqReader(Protocol):
    """Lists the images a DAQ holds and reads one sensor's pixels, verified; every failure
    is a :class:`~cscs.daq.errors.DaqError` naming the image, the sensor and the cause."""

    @property
    def endpoint(self) -> str:
        """Where the pixels come from (recorded as each file's provenance)."""
        ...

    async def list_images(self) -> list[ImageInfo]:
        """Every image in the DAQ's buffer, oldest first."""
        ...

    async def read_sensor(self, image: str, sensor: str) -> SensorPixels:
        """All 16 segments of one detector, in file order."""
        ...

    async def close(self) -> None: ...
