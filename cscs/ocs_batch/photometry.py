"""The photometric zero point of one detector: detected stars matched to a reference
catalog through the header's WCS, measured in apertures.

Definition (ICD 1.1, ``imageQuality.zeroPoint``): the magnitude that gives 1 ADU per
second, through the atmosphere of this exposure, ``m_ref + 2.5 log10(flux / t)`` with
``flux`` the star's ADU above the sky. Raw ADU are not electrons and every amplifier has
its own gain, so each amplifier has its own zero point; the detector's is the median
over all its stars. Both are reported.

Which stars: a reference star on the detector whose nearest detection lies within the
match radius, measured in a circular aperture of 2.5 PSF FWHMs (a Gaussian star loses
nothing measurable beyond it) that lies whole on one amplifier, holds no saturated
pixel, and has no reference star within the aperture and 4 sigma more that is brighter
than a hundredth of it; with a signal-to-noise ratio of at least :data:`MIN_SNR` against
the sky. A handful of such stars per amplifier is enough: each is good to ~0.02 mag.

No zero point rather than a wrong one: with fewer than :data:`MIN_STARS` stars, or when
they disagree by more than :data:`MAX_SCATTER` (median absolute deviation; gains that
differ by 10 % make 0.05), the matches are chance ones (a WCS arcseconds off, a catalog
of another sky) and the value is ``None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import sep

from cscs.camera.geometry import CCD_COLS, CCD_ROWS, IMAGING_COLS, IMAGING_ROWS, SEGMENTS

__all__ = ["MIN_SNR", "Reference", "ZeroPoint", "measure_zero_point"]

Array = npt.NDArray[np.float64]
MIN_SNR = 50.0
MIN_STARS_PER_AMPLIFIER = 5
MIN_STARS = 5
MAX_SCATTER = 0.15  # mag
APERTURE_FWHMS = 2.5  # 5.9 sigma: a Gaussian star loses 3e-8 of its light
_NEIGHBOUR_MAGNITUDES = 5.0  # a neighbour fainter than this adds under 1 %
# SEGMENTS index by (lower half?, 509-column strip)
_AMPLIFIER_AT = {(s.half == 1, s.slot): i for i, s in enumerate(SEGMENTS)}


@dataclass(frozen=True)
class Reference:
    """The reference stars near one detector in its pixels (0-based, detector
    orientation: ``image[row, col]`` is centred on ``(col, row)``), by the header's
    WCS, with their magnitudes in the exposure's band."""

    x: Array
    y: Array
    magnitude: Array
    exposure_time: float  # s
    match_radius: float  # pixels


@dataclass(frozen=True)
class ZeroPoint:
    detector: float | None  # mag giving 1 ADU / s, median over the stars
    amplifiers: tuple[float | None, ...]  # the same per amplifier, SEGMENTS order
    stars: int  # measured


NO_ZERO_POINT = ZeroPoint(None, (None,) * len(SEGMENTS), 0)


def measure_zero_point(
    residual: npt.NDArray[np.float32],
    saturated: npt.NDArray[np.bool_],
    detections: tuple[Array, Array],
    sky_rms: float,
    fwhm: float | None,
    reference: Reference,
) -> ZeroPoint:
    """The zero point from ``residual`` (ADU above the sky) and ``detections`` (their
    x, y); ``fwhm`` is the PSF's, in pixels (None: no PSF, no zero point)."""
    if (
        fwhm is None
        or not (math.isfinite(fwhm) and fwhm > 0)
        or not reference.exposure_time > 0
        or not (math.isfinite(sky_rms) and sky_rms > 0)
        or len(reference.x) == 0
        or len(detections[0]) == 0
    ):
        return NO_ZERO_POINT
    radius = max(APERTURE_FWHMS * fwhm, 4.0)
    stars = _usable(reference, radius, radius + 4.0 * fwhm / 2.3548)
    if stars.size == 0:
        return NO_ZERO_POINT
    x, y = _matched(reference.x[stars], reference.y[stars], detections, reference.match_radius)
    found = np.isfinite(x)
    found[found] = _well_placed(x[found], y[found], radius)  # the aperture is the detection's
    stars, x, y = stars[found], x[found], y[found]
    if stars.size == 0:
        return NO_ZERO_POINT
    flux, _, flags = sep.sum_circle(residual, x, y, radius, mask=saturated)
    noise = sky_rms * math.sqrt(math.pi) * radius
    good = (flags & sep.APER_HASMASKED == 0) & (flux > MIN_SNR * noise)
    if not good.any():
        return NO_ZERO_POINT
    magnitude = reference.magnitude[stars[good]]
    zero_points = magnitude + 2.5 * np.log10(flux[good] / reference.exposure_time)
    median = float(np.median(zero_points))
    if zero_points.size < MIN_STARS or np.median(np.abs(zero_points - median)) > MAX_SCATTER:
        return ZeroPoint(None, NO_ZERO_POINT.amplifiers, int(zero_points.size))
    amplifier = np.array([_amplifier(col, row) for col, row in zip(x[good], y[good], strict=True)])
    per_amplifier: list[float | None] = []
    for index in range(len(SEGMENTS)):
        mine = zero_points[amplifier == index]
        enough = mine.size >= MIN_STARS_PER_AMPLIFIER
        per_amplifier.append(float(np.median(mine)) if enough else None)
    return ZeroPoint(median, tuple(per_amplifier), int(zero_points.size))


def _usable(reference: Reference, radius: float, apart: float) -> npt.NDArray[np.intp]:
    """Reference stars that no other reference star's light reaches, whose aperture
    would lie well placed (:func:`_well_placed`)."""
    x, y, magnitude = reference.x, reference.y, reference.magnitude
    candidates = np.flatnonzero(_well_placed(x, y, radius) & np.isfinite(magnitude))
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    usable = []
    for i in candidates:
        # Only the stars within ``apart`` in x can be within ``apart``: a window
        # of the sorted list, so a crowded field costs N log N, not N².
        first, last = np.searchsorted(sorted_x, [x[i] - apart, x[i] + apart])
        near = order[first:last]
        near = near[near != i]
        close = np.hypot(x[near] - x[i], y[near] - y[i]) < apart
        if not (close & (magnitude[near] < magnitude[i] + _NEIGHBOUR_MAGNITUDES)).any():
            usable.append(i)
    return np.asarray(usable, dtype=np.intp)


def _well_placed(x: Array, y: Array, radius: float) -> npt.NDArray[np.bool_]:
    """Apertures whole on the detector and on one amplifier (pixel edges at ±0.5)."""
    low_x, high_x, low_y, high_y = (
        x - radius + 0.5,
        x + radius + 0.5,
        y - radius + 0.5,
        y + radius + 0.5,
    )
    with np.errstate(invalid="ignore"):
        on_detector = (low_x >= 0) & (high_x <= CCD_COLS) & (low_y >= 0) & (high_y <= CCD_ROWS)
        same_strip = np.floor(low_x / IMAGING_COLS) == np.floor((high_x - 1e-9) / IMAGING_COLS)
        same_half = np.floor(low_y / IMAGING_ROWS) == np.floor((high_y - 1e-9) / IMAGING_ROWS)
    placed: npt.NDArray[np.bool_] = on_detector & same_strip & same_half
    return placed


def _matched(
    x: Array, y: Array, detections: tuple[Array, Array], radius: float
) -> tuple[Array, Array]:
    """Each reference position's nearest detection within ``radius`` (NaN: none)."""
    found_x, found_y = detections
    order = np.argsort(found_x, kind="stable")
    sorted_x, sorted_y = found_x[order], found_y[order]
    firsts = np.searchsorted(sorted_x, x - radius)
    lasts = np.searchsorted(sorted_x, x + radius, side="right")
    matched_x, matched_y = np.full(len(x), np.nan), np.full(len(x), np.nan)
    for i, (first, last) in enumerate(zip(firsts, lasts, strict=True)):
        if first == last:
            continue
        distance = np.hypot(sorted_x[first:last] - x[i], sorted_y[first:last] - y[i])
        nearest = int(np.argmin(distance))
        if distance[nearest] <= radius:
            matched_x[i], matched_y[i] = sorted_x[first + nearest], sorted_y[first + nearest]
    return matched_x, matched_y


def _amplifier(col: float, row: float) -> int:
    return _AMPLIFIER_AT[(row < IMAGING_ROWS, int(col // IMAGING_COLS))]
