"""Which CCD sits in each slot of the simulated cameras: made up, but fixed, as a real
camera's hardware is, so headers carry the same ``LSST_NUM`` for a slot in every image
and across restarts.

Every CCD is an ITL 3800C: the segment geometry the simulator cuts its pixels with
(:mod:`cscs.camera.geometry`: 2 x 8 amplifiers of 509 x 2000 imaging pixels, 3 prescan
columns) is ITL's, so claiming an e2v part would put the wrong layout under its name.
Numbers come from a stable hash of the camera and the slot; a number another slot of
the same camera already has moves to the next free one (slots taken in the camera's
fixed order), so they are unique within a camera and never change.
"""

from __future__ import annotations

import functools
import zlib

from cscs.camera.events import FocalPlaneSummaryInfo
from cscs.camera.geometry import Camera

__all__ = ["CCD_MANUFACTURER", "CCD_TYPE", "focal_plane_hardware"]

CCD_MANUFACTURER = "ITL"
CCD_TYPE = "3800C"
_LSST_NUMBERS = range(1, 1000)  # ITL-3800C-001 … -999
_SERIALS = range(10000, 100000)  # five digits, as ITL's


def _unique_numbers(keys: list[str], numbers: range) -> list[int]:
    """A number from ``numbers`` for each key, by hash, the next free one on a collision."""
    taken: set[int] = set()
    chosen = []
    for key in keys:
        offset = zlib.crc32(key.encode()) % len(numbers)
        while numbers[offset] in taken:
            offset = (offset + 1) % len(numbers)
        taken.add(numbers[offset])
        chosen.append(numbers[offset])
    return chosen


@functools.cache
def focal_plane_hardware(camera: Camera) -> FocalPlaneSummaryInfo:
    """The ``focalPlaneSummaryInfo`` of ``camera``: every detector, in the camera's order."""
    names = [d.name for d in camera.detectors]
    lsst = _unique_numbers([f"{camera.name}/{n}/lsst" for n in names], _LSST_NUMBERS)
    serials = _unique_numbers([f"{camera.name}/{n}/serial" for n in names], _SERIALS)
    return FocalPlaneSummaryInfo(
        ccdLocation=",".join(names),
        ccdManufacturer=",".join(CCD_MANUFACTURER for _ in names),
        ccdType=",".join(CCD_TYPE for _ in names),
        ccdLSSTName=",".join(f"{CCD_MANUFACTURER}-{CCD_TYPE}-{n:03d}" for n in lsst),
        ccdManSerNum=",".join(str(n) for n in serials),
    )
