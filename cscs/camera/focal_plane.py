"""Where every pixel is in the camera: a segment's pixels in the camera team's frames
(amplifier, CCD, raft, focal plane, and their serial/parallel twins), computed from the
one geometry (:mod:`cscs.camera.geometry`).

The real raws describe each frame in each amplifier's extension as a linear
"alternative WCS" (letters ``A`` … ``R``): ``world = CRVAL + PC · pixel`` with
``CRPIX = 0`` and ``CDELT = 1``, so that a reader with nothing but the file can place
every segment on its CCD, its raft and the focal plane. The conventions are the
camera's (``docs/raw-format.md``), checked against real headers in the tests:

* the camera's CCD frame is the detector image turned a quarter: ``CCD_X`` runs down
  the detector's rows (``CCD_X = 4001 - y``), ``CCD_Y`` along its columns (``= x``);
* a raft is 3 x 3 CCDs on a 4225-pixel pitch (42.25 mm of 10 µm pixels) centred in a
  12700-pixel cell (127 mm); slot ``S{i}{j}`` is column ``i`` in X and ``j`` in Y;
* the focal plane is 5 x 5 raft cells; raft ``R{i}{j}`` starts at ``12700 · (i, j)``;
* each ``*_SERPAR`` frame is its ``_X``/``_Y`` frame with the two axes swapped.

Values are 1-based (FITS) pixel coordinates, as the camera's are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cscs.camera.geometry import (
    CCD_COLS,
    CCD_ROWS,
    IMAGING_COLS,
    IMAGING_ROWS,
    PRESCAN_COLS,
    Camera,
    Detector,
    Segment,
)

__all__ = [
    "CCD_PITCH",
    "PIXEL_FRAMES",
    "RAFT_PITCH",
    "Frame",
    "LinearFrame",
    "boresight_on_detector",
    "ccd_offset_in_raft",
    "raft_offset",
    "segment_keywords",
]

RAFT_PITCH = 12700  # pixels: 127 mm between raft centres
CCD_PITCH = 4225  # pixels: 42.25 mm between CCD centres in a raft


@dataclass(frozen=True)
class Frame:
    """One of the camera's pixel frames, as the real raws name it."""

    letter: str  # the alternative-WCS letter
    name: str  # WCSNAMEx
    axes: tuple[str, str]  # CTYPE1x, CTYPE2x


# In the order the real raws carry them.
PIXEL_FRAMES: tuple[Frame, ...] = (
    Frame("A", "AMPLIFIER", ("Seg_X", "Seg_Y")),
    Frame("C", "CCD", ("CCD_X", "CCD_Y")),
    Frame("R", "RAFT", ("RAFT_X", "RAFT_Y")),
    Frame("F", "FOCAL_PLANE", ("FP_X", "FP_Y")),
    Frame("E", "FP_SERPAR", ("FP_S", "FP_P")),
    Frame("B", "CCD_SERPAR", ("CCD_S", "CCD_P")),
    Frame("Q", "RAFT_SERPAR", ("RAFT_S", "RAFT_P")),
)


@dataclass(frozen=True)
class LinearFrame:
    """``world = crval + pc · pixel``: one segment's pixels in one frame."""

    pc: tuple[tuple[int, int], tuple[int, int]]
    crval: tuple[int, int]

    def shifted(self, dx: int, dy: int) -> LinearFrame:
        return LinearFrame(self.pc, (self.crval[0] + dx, self.crval[1] + dy))

    def swapped(self) -> LinearFrame:
        """The same frame with its two world axes exchanged (``*_SERPAR``)."""
        return LinearFrame((self.pc[1], self.pc[0]), (self.crval[1], self.crval[0]))

    def apply(self, p1: float, p2: float) -> tuple[float, float]:
        (a, b), (c, d) = self.pc
        return self.crval[0] + a * p1 + b * p2, self.crval[1] + c * p1 + d * p2


def _digits(name: str) -> tuple[int, int]:
    return int(name[1]), int(name[2])


def ccd_offset_in_raft(detector: Detector) -> tuple[int, int]:
    """``RAFT - CCD`` for every pixel of ``detector`` (its slot's place in the raft)."""
    i, j = _digits(detector.slot)
    centre = RAFT_PITCH // 2
    return (
        centre + (i - 1) * CCD_PITCH - CCD_ROWS // 2,
        centre + (j - 1) * CCD_PITCH - CCD_COLS // 2,
    )


def raft_offset(detector: Detector) -> tuple[int, int]:
    """``FOCAL_PLANE - RAFT`` (the raft's cell in the 5 x 5 focal plane)."""
    i, j = _digits(detector.raft)
    return i * RAFT_PITCH, j * RAFT_PITCH


def _ccd_frame(segment: Segment) -> LinearFrame:
    """Segment pixel (p1, p2) → CCD frame: x = DTM1_1·p1 + DTV1, y = DTM2_2·p2 + DTV2 on
    the detector, then CCD_X = CCD_ROWS + 1 - y and CCD_Y = x."""
    return LinearFrame(
        ((0, -segment.dtm2_2), (segment.dtm1_1, 0)),
        (CCD_ROWS + 1 - segment.dtv2, segment.dtv1),
    )


def _amplifier_origin(frame: LinearFrame) -> tuple[int, int]:
    """Where the segment's imaging area begins in the CCD frame, less one: the
    amplifier frame counts from 1 there."""
    first = (PRESCAN_COLS + 1, 1)
    last = (PRESCAN_COLS + IMAGING_COLS, IMAGING_ROWS)
    a, b = frame.apply(*first), frame.apply(*last)
    return int(min(a[0], b[0])) - 1, int(min(a[1], b[1])) - 1


def segment_frames(detector: Detector, segment: Segment) -> dict[str, LinearFrame]:
    """Every frame of :data:`PIXEL_FRAMES` for one segment of ``detector``, by letter."""
    ccd = _ccd_frame(segment)
    ox, oy = _amplifier_origin(ccd)
    raft = ccd.shifted(*ccd_offset_in_raft(detector))
    focal_plane = raft.shifted(*raft_offset(detector))
    return {
        "A": ccd.shifted(-ox, -oy),
        "C": ccd,
        "R": raft,
        "F": focal_plane,
        "E": focal_plane.swapped(),
        "B": ccd.swapped(),
        "Q": raft.swapped(),
    }


def _frame_keywords(frame: Frame, linear: LinearFrame) -> dict[str, Any]:
    x = frame.letter
    (a, b), (c, d) = linear.pc
    return {
        f"WCSNAME{x}": frame.name,
        f"CTYPE1{x}": frame.axes[0],
        f"CTYPE2{x}": frame.axes[1],
        f"PC1_1{x}": float(a),
        f"PC1_2{x}": float(b),
        f"PC2_1{x}": float(c),
        f"PC2_2{x}": float(d),
        f"CDELT1{x}": 1.0,
        f"CDELT2{x}": 1.0,
        f"CRPIX1{x}": 0.0,
        f"CRPIX2{x}": 0.0,
        f"CRVAL1{x}": float(linear.crval[0]),
        f"CRVAL2{x}": float(linear.crval[1]),
    }


def segment_keywords(detector: Detector, segment: Segment) -> dict[str, Any]:
    """An amplifier extension's keywords (everything but the FITS structure and the
    checksums), in the order the real raws carry them: identity, sections, the
    detector transform, then every pixel frame."""
    keywords = segment.keywords()
    frames = segment_frames(detector, segment)
    for frame in PIXEL_FRAMES:
        keywords |= _frame_keywords(frame, frames[frame.letter])
    keywords["INHERIT"] = True
    return keywords


# ---- the optical axis -------------------------------------------------------------------


def _central_detector(camera: Camera) -> Detector:
    return Detector("R00", "S00") if camera is Camera.LATISS else Detector("R22", "S11")


def _focal_plane_of_ccd_centre(detector: Detector) -> tuple[float, float]:
    rx, ry = raft_offset(detector)
    cx, cy = ccd_offset_in_raft(detector)
    return rx + cx + (CCD_ROWS + 1) / 2, ry + cy + (CCD_COLS + 1) / 2


def boresight_on_detector(camera: Camera, detector: Detector) -> tuple[float, float]:
    """Where the optical axis falls in ``detector``'s pixel coordinates (1-based x, y;
    far outside the detector for all but the central one). The axis is the centre of
    the central CCD: ``R22_S11`` for ComCam and LSSTCam, LATISS's one CCD."""
    axis_x, axis_y = _focal_plane_of_ccd_centre(_central_detector(camera))
    rx, ry = raft_offset(detector)
    cx, cy = ccd_offset_in_raft(detector)
    ccd_x, ccd_y = axis_x - rx - cx, axis_y - ry - cy
    return ccd_y, CCD_ROWS + 1 - ccd_x
