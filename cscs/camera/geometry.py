"""Camera geometry: cameras, detectors and amplifier segments, computed in one place.

The camera simulator cuts its synthetic detector images into raw segments with these
numbers, the header service writes them into headers, and the archiver writes them into
each extension, so all three agree by construction.

Conventions (``docs/domain.md``): a CCD is read through 16 amplifiers in 2 rows of
8. A raw segment is 576 columns x 2048 rows: 3 columns of serial prescan, 509 imaging
columns, 64 of serial overscan; 2000 imaging rows, then 48 of parallel overscan.
Segments ``Segment10`` … ``Segment17`` read the lower half of the CCD (detector rows
1-2000) and are flipped in x; ``Segment07`` … ``Segment00`` read the upper half and are
flipped in y. A raw pixel (i, j) (1-based FITS) lands on the detector at
``x = DTM1_1 * i + DTV1``, ``y = DTM2_2 * j + DTV2``.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CCD_COLS",
    "CCD_ROWS",
    "DETSIZE",
    "SATURATION",
    "SEGMENTS",
    "SEGMENT_COLS",
    "SEGMENT_ROWS",
    "Camera",
    "Detector",
    "Segment",
    "camera_for_index",
    "detector_keywords",
]

PRESCAN_COLS = 3
IMAGING_COLS = 509
SERIAL_OVERSCAN_COLS = 64
IMAGING_ROWS = 2000
PARALLEL_OVERSCAN_ROWS = 48
SEGMENT_COLS = PRESCAN_COLS + IMAGING_COLS + SERIAL_OVERSCAN_COLS  # 576
SEGMENT_ROWS = IMAGING_ROWS + PARALLEL_OVERSCAN_ROWS  # 2048
AMPS_PER_ROW = 8
CCD_COLS = AMPS_PER_ROW * IMAGING_COLS  # 4072
CCD_ROWS = 2 * IMAGING_ROWS  # 4000
DETSIZE = f"[1:{CCD_COLS},1:{CCD_ROWS}]"
SATURATION = 2**18 - 1  # 18-bit ADC, carried in int32
BYTES_PER_PIXEL = 4
SEGMENT_BYTES = SEGMENT_COLS * SEGMENT_ROWS * BYTES_PER_PIXEL


def _section(x1: int, x2: int, y1: int, y2: int) -> str:
    return f"[{x1}:{x2},{y1}:{y2}]"


@dataclass(frozen=True)
class Segment:
    """One amplifier's raw segment and where its imaging pixels sit on the detector."""

    name: str  # EXTNAME: Segment10 … Segment17, Segment07 … Segment00
    half: int  # 1: lower half (rows 1-2000, x-flipped); 0: upper half (y-flipped)
    slot: int  # 0-7: which 509-column strip of the detector

    @property
    def dtm1_1(self) -> int:
        return -1 if self.half == 1 else 1

    @property
    def dtm2_2(self) -> int:
        return 1 if self.half == 1 else -1

    @property
    def dtv1(self) -> int:
        left = self.slot * IMAGING_COLS  # detector columns left+1 … left+509
        first_data = PRESCAN_COLS + 1
        if self.dtm1_1 == -1:  # i = first_data lands on the strip's right edge
            return left + IMAGING_COLS + first_data
        return left + 1 - first_data

    @property
    def dtv2(self) -> int:
        return 0 if self.dtm2_2 == 1 else CCD_ROWS + 1

    @property
    def datasec(self) -> str:
        first = PRESCAN_COLS + 1
        return _section(first, first + IMAGING_COLS - 1, 1, IMAGING_ROWS)

    @property
    def biassec(self) -> str:
        """The serial overscan, over the imaging rows."""
        first = PRESCAN_COLS + IMAGING_COLS + 1
        return _section(first, SEGMENT_COLS, 1, IMAGING_ROWS)

    @property
    def detsec(self) -> str:
        """DATASEC's corners mapped to the detector (first pixel first, so flips show)."""
        i1, i2 = PRESCAN_COLS + 1, PRESCAN_COLS + IMAGING_COLS
        x1, x2 = self.dtm1_1 * i1 + self.dtv1, self.dtm1_1 * i2 + self.dtv1
        y1, y2 = self.dtv2 + self.dtm2_2 * 1, self.dtv2 + self.dtm2_2 * IMAGING_ROWS
        return _section(x1, x2, y1, y2)

    def keywords(self) -> dict[str, Any]:
        """The extension's identity, sections and detector transform, in the order the
        real raws carry them (the pixel frames follow: :mod:`cscs.camera.focal_plane`)."""
        return {
            "CHANNEL": SEGMENTS.index(self) + 1,
            "EXTNAME": self.name,
            "CCDSUM": "1 1",
            "DATASEC": self.datasec,
            "DETSEC": self.detsec,
            "DETSIZE": DETSIZE,
            "BIASSEC": self.biassec,
            "DTV1": self.dtv1,
            "DTV2": self.dtv2,
            "DTM1_1": float(self.dtm1_1),
            "DTM2_2": float(self.dtm2_2),
            "DTM1_2": 0.0,
            "DTM2_1": 0.0,
        }

    # numpy slices (0-based, [row, column]) for code that moves pixels
    @property
    def imaging_slice(self) -> tuple[slice, slice]:
        """The imaging pixels within the raw segment array."""
        return (slice(0, IMAGING_ROWS), slice(PRESCAN_COLS, PRESCAN_COLS + IMAGING_COLS))

    def detector_slice(self) -> tuple[slice, slice]:
        """The detector pixels this segment's imaging area covers, in raw-segment
        order: ``detector[rows, cols]`` has the same orientation as the raw imaging
        pixels, flips included."""
        left = self.slot * IMAGING_COLS
        cols = (
            slice(left + IMAGING_COLS - 1, left - 1 if left else None, -1)
            if self.dtm1_1 == -1
            else slice(left, left + IMAGING_COLS)
        )
        rows = (
            slice(0, IMAGING_ROWS)
            if self.dtm2_2 == 1
            else slice(CCD_ROWS - 1, CCD_ROWS - IMAGING_ROWS - 1, -1)
        )
        return rows, cols


# File order: Segment10 … Segment17, then Segment07 … Segment00 (docs/domain.md).
SEGMENTS: tuple[Segment, ...] = tuple(Segment(f"Segment1{s}", 1, s) for s in range(8)) + tuple(
    Segment(f"Segment0{s}", 0, s) for s in reversed(range(8))
)
SEGMENT_NAMES: tuple[str, ...] = tuple(s.name for s in SEGMENTS)


@dataclass(frozen=True, order=True)
class Detector:
    """A CCD by raft and slot, e.g. ``R22_S11``."""

    raft: str  # Rxy
    slot: str  # Sxy

    @property
    def name(self) -> str:
        return f"{self.raft}_{self.slot}"

    @classmethod
    def parse(cls, name: str) -> Detector:
        raft, sep, slot = name.partition("_")
        ok = (
            sep
            and len(raft) == 3
            and raft[0] == "R"
            and raft[1:].isdigit()
            and all(c in "01234" for c in raft[1:])
            and len(slot) == 3
            and slot[0] == "S"
            and all(c in "012" for c in slot[1:])
        )
        if not ok:
            raise ValueError(f"not a detector name (RXY_SXY): {name!r}")
        return cls(raft, slot)

    def __str__(self) -> str:
        return self.name


def _raft_detectors(raft: str) -> tuple[Detector, ...]:
    return tuple(Detector(raft, f"S{x}{y}") for x in range(3) for y in range(3))


_CORNER_RAFTS = {"R00", "R04", "R40", "R44"}


class Camera(enum.Enum):
    """The three cameras, by CSC index (ICD §5)."""

    LATISS = 1
    COMCAM = 2
    LSSTCAM = 3

    @property
    def code(self) -> str:
        """Image-name prefix: AT, CC or MC."""
        return {1: "AT", 2: "CC", 3: "MC"}[self.value]

    @property
    def instrument(self) -> str:
        """The instrument's name in DM (the butler's): the archive's instrument directory
        and the catalog's ``instrument``."""
        return {1: "LATISS", 2: "LSSTComCam", 3: "LSSTCam"}[self.value]

    @property
    def header_instrument(self) -> str:
        """``INSTRUME`` as the camera writes it in the real raws, which is how the
        pipelines' metadata translators recognise a file's camera."""
        return {1: "LATISS", 2: "ComCam", 3: "lsstCam"}[self.value]

    @property
    def telescope(self) -> str:
        """``TELESCOP`` as in the real raws."""
        return "LSST AuxTelescope" if self is Camera.LATISS else "Simonyi Survey Telescope"

    @property
    def pixel_scale(self) -> float:
        """Arcseconds per pixel."""
        return 0.1 if self is Camera.LATISS else 0.2

    @property
    def detectors(self) -> tuple[Detector, ...]:
        return _detectors(self)

    def detector(self, name: str) -> Detector:
        detector = Detector.parse(name)
        if detector not in _detector_set(self):
            raise ValueError(f"{self.instrument} has no detector {name}")
        return detector


@functools.cache
def _detectors(camera: Camera) -> tuple[Detector, ...]:
    if camera is Camera.LATISS:
        return (Detector("R00", "S00"),)
    if camera is Camera.COMCAM:
        return _raft_detectors("R22")
    rafts = [f"R{x}{y}" for x in range(5) for y in range(5) if f"R{x}{y}" not in _CORNER_RAFTS]
    return tuple(d for raft in rafts for d in _raft_detectors(raft))


@functools.cache
def _detector_set(camera: Camera) -> frozenset[Detector]:
    return frozenset(_detectors(camera))


def camera_for_index(index: int) -> Camera:
    try:
        return Camera(index)
    except ValueError:
        raise ValueError(
            f"camera index must be 1 (LATISS), 2 (ComCam) or 3 (LSSTCam), not {index}"
        ) from None


def detector_keywords(detector: Detector) -> dict[str, Any]:
    """Per-detector primary-header keywords that follow from the geometry alone (the
    detector's size, ``DETSIZE``, is in each extension, as in the real raws)."""
    return {"RAFTBAY": detector.raft, "CCDSLOT": detector.slot}
