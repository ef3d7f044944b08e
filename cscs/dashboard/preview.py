"""The quick-look picture of one archived image, as PNG bytes, for the night staff.

The staff glance at each image as it is archived (dome open? tracking? a detector dead,
an amplifier's bias wild?), so the picture is made from the raw files alone:

* **Placement.** Each detector sits where it is in the focal plane
  (:func:`~cscs.camera.focal_plane.ccd_offset_in_raft` and
  :func:`~cscs.camera.focal_plane.raft_offset`, as ``DETSEC``/``DTV`` are), in detector
  orientation: x to the right, y up; so ``FP_Y`` runs right and ``FP_X`` down (``S00``
  top left of its raft, ``S22`` bottom right). The picture spans the whole camera;
  gaps and detectors not given or not readable are black (0).
* **Bias.** Each amplifier segment loses its bias level: one figure per segment, the
  median of its serial overscan columns over the imaging rows (no bright stripes).
* **Binning.** ``binning`` x ``binning`` blocks (8 by default, as the observatory's
  focal-plane view) are averaged: a 4k x 4k detector becomes 509 x 500 pixels, which a
  screen shows whole, with the noise beaten down so faint structure shows. Pixels
  beyond a multiple of ``binning`` (top rows, right columns) are dropped; a detector
  lands on the binned pixel nearest its real place.
* **Stretch.** asinh between the 1 % and 99.5 % quantiles of the mosaic's finite
  pixels: linear near the sky, logarithmic above, so the sky's noise and a star's core
  both show in 8 bits. If the quantiles agree the maximum is the top; a flat image is
  mid-grey (128), never a division by zero.
* **Orientation.** Row 0 of a PNG is the top, row 0 of a FITS image the bottom (y up):
  the mosaic is flipped vertically before it is encoded.

One detector is read at a time (65 MB as float32); only the binned mosaic is kept. A
file that cannot be drawn is skipped and named in :attr:`Preview.problems`, never
raised. No state is kept: any thread may call it. :func:`encode_png` is a minimal
grayscale PNG encoder (zlib only, no imaging library).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cscs.camera.focal_plane import ccd_offset_in_raft, raft_offset
from cscs.camera.geometry import (
    CCD_COLS,
    CCD_ROWS,
    IMAGING_COLS,
    IMAGING_ROWS,
    PRESCAN_COLS,
    SEGMENT_COLS,
    SEGMENT_ROWS,
    SEGMENTS,
    Camera,
    Detector,
)

__all__ = ["Preview", "encode_png", "render_preview"]

LOW_QUANTILE = 0.01
HIGH_QUANTILE = 0.995
SOFTENING = 0.1  # the asinh curve turns from linear to logarithmic near this fraction
FLAT_GREY = 128
_QUANTILE_SAMPLES = 4_000_000  # quantiles of a larger mosaic from evenly strided pixels
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Image = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Preview:
    """The picture and what went into it."""

    png: bytes
    width: int
    height: int
    detectors: tuple[str, ...]  # the detectors drawn, e.g. ("R22_S11",)
    problems: tuple[str, ...]  # one sentence per file that could not be drawn


def render_preview(paths: Sequence[Path], camera: Camera, binning: int = 8) -> Preview:
    """The picture of the image whose raw files (one per detector) are ``paths``."""
    if not 1 <= binning <= min(CCD_ROWS, CCD_COLS):
        raise ValueError(f"binning must be 1 to {min(CCD_ROWS, CCD_COLS)}, not {binning}")
    origins, shape = _layout(camera, binning)
    mosaic = np.full(shape, np.nan, dtype=np.float32)  # FITS orientation: row 0 at the bottom
    drawn: dict[Detector, str] = {}  # → the file it was drawn from
    problems: list[str] = []
    for path in paths:
        try:
            detector, binned = _read_binned(Path(path), camera, binning, drawn)
        except Exception as error:  # whatever is wrong with one file, the rest are drawn
            problems.append(f"{Path(path).name} could not be drawn: {_reason(error)}.")
            continue
        row, col = origins[detector]
        mosaic[row : row + binned.shape[0], col : col + binned.shape[1]] = binned
        drawn[detector] = Path(path).name
    gray = _stretch(mosaic)[::-1]
    return Preview(
        png=encode_png(gray),
        width=gray.shape[1],
        height=gray.shape[0],
        detectors=tuple(sorted(d.name for d in drawn)),
        problems=tuple(problems),
    )


def encode_png(gray: npt.NDArray[np.uint8]) -> bytes:
    """An 8-bit grayscale PNG of ``gray`` (2-D ``uint8``, row 0 at the top)."""
    if gray.ndim != 2 or gray.dtype != np.uint8 or 0 in gray.shape:
        raise ValueError(f"a PNG needs a non-empty 2-D uint8 array, not {gray.dtype} {gray.shape}")
    height, width = gray.shape
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # filter byte 0 (none) per row
    rows[:, 1:] = gray
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # depth 8, grayscale
    pixels = zlib.compress(rows.tobytes(), 6)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _layout(
    camera: Camera, binning: int
) -> tuple[dict[Detector, tuple[int, int]], tuple[int, int]]:
    """Each detector's lower-left corner in the binned mosaic (row, column; row 0 at
    the bottom), and the mosaic's shape. Detector x is focal-plane Y; y is -X."""
    corners = {d: _corner(d) for d in camera.detectors}
    low_row = min(r for r, _ in corners.values())
    low_col = min(c for _, c in corners.values())
    origins = {
        d: ((r - low_row + binning // 2) // binning, (c - low_col + binning // 2) // binning)
        for d, (r, c) in corners.items()
    }
    rows = max(r for r, _ in origins.values()) + CCD_ROWS // binning
    cols = max(c for _, c in origins.values()) + CCD_COLS // binning
    return origins, (rows, cols)


def _corner(detector: Detector) -> tuple[int, int]:
    """The detector's first pixel in unbinned mosaic units (up, right): -FP_X, FP_Y."""
    (raft_x, raft_y), (ccd_x, ccd_y) = raft_offset(detector), ccd_offset_in_raft(detector)
    return -(raft_x + ccd_x), raft_y + ccd_y


def _read_binned(
    path: Path, camera: Camera, binning: int, drawn: Mapping[Detector, str]
) -> tuple[Detector, Image]:
    """The detector a raw file holds and its bias-subtracted, binned pixels."""
    import fitsio

    with fitsio.FITS(str(path)) as hdus:
        if len(hdus) != 1 + len(SEGMENTS):
            raise ValueError(f"{len(hdus)} HDUs where a raw file has {1 + len(SEGMENTS)}")
        header = hdus[0].read_header()
        raft, slot = header.get("RAFTBAY"), header.get("CCDSLOT")
        if not (isinstance(raft, str) and isinstance(slot, str)):
            raise ValueError("its primary header names no detector (RAFTBAY, CCDSLOT)")
        detector = camera.detector(f"{raft.strip()}_{slot.strip()}")
        if detector in drawn:
            raise ValueError(f"{detector} is drawn already, from {drawn[detector]}")
        extensions = {hdu.get_extname(): hdu for hdu in hdus[1:]}
        image = np.empty((CCD_ROWS, CCD_COLS), dtype=np.float32)
        for segment in SEGMENTS:
            if segment.name not in extensions:
                raise ValueError(f"no {segment.name} extension")
            pixels = np.asarray(extensions[segment.name].read())
            if pixels.shape != (SEGMENT_ROWS, SEGMENT_COLS):
                raise ValueError(f"{segment.name} is {pixels.shape}, not a raw segment")
            overscan = pixels[:IMAGING_ROWS, PRESCAN_COLS + IMAGING_COLS :]
            target = segment.detector_slice()
            image[target] = pixels[segment.imaging_slice]
            image[target] -= np.float32(np.median(overscan))
    return detector, _bin(image, binning)


def _bin(image: Image, binning: int) -> Image:
    rows, cols = image.shape[0] // binning, image.shape[1] // binning
    blocks = image[: rows * binning, : cols * binning].reshape(rows, binning, cols, binning)
    return np.asarray(blocks.mean(axis=(1, 3), dtype=np.float64), dtype=np.float32)


def _stretch(mosaic: Image) -> npt.NDArray[np.uint8]:
    """8-bit grey levels: asinh between two quantiles; non-finite pixels black."""
    finite = np.isfinite(mosaic)
    gray = np.zeros(mosaic.shape, dtype=np.uint8)
    values = mosaic[finite]
    if values.size == 0:
        return gray  # nothing drawn: all black
    sample = values[:: max(1, values.size // _QUANTILE_SAMPLES)]
    low, high = (float(q) for q in np.quantile(sample, [LOW_QUANTILE, HIGH_QUANTILE]))
    if not high > low:
        high = float(values.max())
    if not high > low:
        gray[finite] = FLAT_GREY
        return gray
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
    curve = np.arcsinh(scaled / SOFTENING) / np.arcsinh(1.0 / SOFTENING)
    gray[finite] = np.rint(255.0 * curve).astype(np.uint8)
    return gray


def _reason(error: Exception) -> str:
    """The first line of an error (cfitsio appends its error stack), or its type."""
    lines = str(error).strip().splitlines()
    text = lines[0].rstrip(".") if lines else type(error).__name__
    if isinstance(error, OSError) and "status = 104" in text:
        return f"it could not be opened ({text})"
    if isinstance(error, OSError) and "FITSIO" in text:
        return f"not a whole FITS file ({text})"
    return text
