"""``image-qc``: the quick-look quality of one detector, from its 16 raw segments alone.

Plain functions over numpy arrays, independent of the CSC and of Dask, so the numbers
are tested against the simulator's known inputs and run the same on any worker.

Definitions (those of the observatory's quick-look displays):

* per amplifier, from the serial overscan (the columns after the imaging pixels, less
  the first few that the deferred charge of bright pixels reaches): the bias level, the
  clipped mean, and the read noise, the clipped standard deviation, both in ADU;
* per detector, after each amplifier's bias level is subtracted: the sky, the clipped
  mean of each amplifier's imaging pixels averaged over the amplifiers (ADU), and its
  RMS; sources detected at 5 sigma with ``sep`` (Source Extractor's library) after
  each amplifier's sky is removed (amplifiers differ in gain, so one smooth background
  would not fit);
* the PSF from isolated, unsaturated, bright stars: Gaussian-weighted adaptive second
  moments ``Ixx, Iyy, Ixy`` per star (converged, they are the moments of the star
  itself), FWHM = 2.355 sigma with sigma = (Ixx Iyy - Ixy²)^¼ in arcsec at the
  camera's pixel scale, e1 = (Ixx - Iyy)/(Ixx + Iyy), e2 = 2 Ixy/(Ixx + Iyy); the
  detector's values are the medians over its PSF stars, ellipticity = |(e1, e2)|;
* given the reference stars on the detector (by the header's WCS), the zero point, per
  amplifier and per detector (:mod:`cscs.ocs_batch.photometry`).

No star, no PSF: those metrics are ``None`` (a bias has a bias level and no seeing); no
reference catalog, no zero point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sep

from cscs.camera.geometry import (
    CCD_COLS,
    CCD_ROWS,
    IMAGING_COLS,
    IMAGING_ROWS,
    PRESCAN_COLS,
    SATURATION,
    SEGMENTS,
)
from cscs.ocs_batch.photometry import NO_ZERO_POINT, Reference, measure_zero_point

__all__ = [
    "AmplifierQc",
    "DetectorQc",
    "assemble",
    "clipped_stats",
    "image_summary",
    "measure_detector",
    "overscan_stats",
]

Image = npt.NDArray[np.float32]
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548
_OVERSCAN_SKIP = 5  # columns after the imaging area that deferred charge reaches
_DETECTION_SIGMA = 5.0
_PSF_SNR = 50.0  # a PSF star is measured to better than 2 %
_MAX_PSF_STARS = 300  # the brightest candidates: enough for a median, bounded in time
_ISOLATION = 6.0  # PSF sigmas to the nearest other source


@dataclass(frozen=True)
class AmplifierQc:
    segment: str  # EXTNAME, e.g. Segment10
    biasLevel: float  # ADU
    readNoise: float  # ADU
    skyLevel: float  # ADU above bias
    zeroPoint: float | None  # mag giving 1 ADU / s on this amplifier


@dataclass(frozen=True)
class DetectorQc:
    sensor: str
    amplifiers: tuple[AmplifierQc, ...]
    skyMean: float  # ADU above bias, mean over amplifiers
    skyRms: float  # ADU
    nSources: int
    nPsfStars: int
    psfFwhm: float | None  # arcsec
    psfE1: float | None
    psfE2: float | None
    ellipticity: float | None
    zeroPoint: float | None  # mag giving 1 ADU / s, median over the stars
    nZpStars: int  # stars the zero point is measured on

    def as_json(self) -> dict[str, Any]:
        """The DM-internal QC payload (ICD 1.1): names as in ``imageQuality``."""
        values = asdict(self)
        values["amplifiers"] = [asdict(a) for a in self.amplifiers]
        return values


def clipped_stats(
    values: npt.NDArray[Any], nsigma: float = 5.0, iterations: int = 5
) -> tuple[float, float]:
    """Mean and standard deviation after iteratively dropping what lies more than
    ``nsigma`` from the median (cosmic rays, stars); at 5 sigma a Gaussian loses
    nothing measurable, so the figures need no truncation correction."""
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return math.nan, math.nan
    for _ in range(iterations):
        centre, spread = float(np.median(data)), float(data.std())
        if spread == 0.0:
            break
        kept = data[np.abs(data - centre) <= nsigma * spread]
        if kept.size == data.size or kept.size < 2:
            data = kept if kept.size >= 2 else data
            break
        data = kept
    return float(data.mean()), float(data.std())


def overscan_stats(segment: npt.NDArray[Any]) -> tuple[float, float]:
    """One raw segment's bias level and read noise (ADU) from its serial overscan."""
    first = PRESCAN_COLS + IMAGING_COLS + _OVERSCAN_SKIP
    return clipped_stats(segment[:IMAGING_ROWS, first:])


def assemble(
    segments: Sequence[npt.NDArray[Any]], bias_levels: Sequence[float]
) -> tuple[Image, npt.NDArray[np.bool_]]:
    """The detector's imaging pixels less each amplifier's bias level (float32, detector
    orientation), and where the ADC saturated."""
    image = np.empty((CCD_ROWS, CCD_COLS), dtype=np.float32)
    saturated = np.zeros((CCD_ROWS, CCD_COLS), dtype=np.bool_)
    for segment, pixels, bias in zip(SEGMENTS, segments, bias_levels, strict=True):
        imaging = pixels[segment.imaging_slice]
        target = segment.detector_slice()
        image[target] = imaging
        image[target] -= np.float32(bias)
        saturated[target] = imaging >= SATURATION
    return image, saturated


def measure_detector(
    sensor: str,
    segments: Sequence[npt.NDArray[Any]],
    pixel_scale: float,
    reference: Reference | None = None,
) -> DetectorQc:
    """Every ``image-qc`` metric of one detector from its raw segments (file order),
    and its zero point if ``reference`` stars are given."""
    if len(segments) != len(SEGMENTS):
        raise ValueError(f"{sensor}: {len(segments)} segments, expected {len(SEGMENTS)}")
    overscan = [overscan_stats(s) for s in segments]
    image, saturated = assemble(segments, [level for level, _ in overscan])
    skies: list[tuple[float, float]] = []
    for segment in SEGMENTS:
        region = segment.detector_slice()
        # Every other pixel of every other row: 250 000 samples measure a sky to far
        # better than any use of it needs, in a quarter of the time.
        sky, rms = clipped_stats(image[region][::2, ::2], nsigma=3.0)
        image[region] -= np.float32(sky)  # each amplifier flattened to zero sky
        skies.append((sky, rms))
    sky_rms = float(np.mean([rms for _, rms in skies]))
    objects, residual = _detect(image, saturated, sky_rms)
    stars = _psf_stars(image, saturated, objects, sky_rms)
    moments = [m for m in (_adaptive_moments(image, x, y, s) for x, y, s in stars) if m]
    psf = _summarise(moments, pixel_scale)
    zero_point, fwhm = NO_ZERO_POINT, psf["psfFwhm"]
    if reference is not None and fwhm is not None:
        detections = (np.asarray(objects["x"]), np.asarray(objects["y"]))
        zero_point = measure_zero_point(
            residual, saturated, detections, sky_rms, fwhm / pixel_scale, reference
        )
    amplifiers = tuple(
        AmplifierQc(segment.name, level, noise, sky, amplifier_zero_point)
        for segment, (level, noise), (sky, _), amplifier_zero_point in zip(
            SEGMENTS, overscan, skies, zero_point.amplifiers, strict=True
        )
    )
    return DetectorQc(
        sensor=sensor,
        amplifiers=amplifiers,
        skyMean=float(np.mean([sky for sky, _ in skies])),
        skyRms=sky_rms,
        nSources=len(objects),
        nPsfStars=len(moments),
        **psf,
        zeroPoint=zero_point.detector,
        nZpStars=zero_point.stars,
    )


def _detect(
    image: Image, saturated: npt.NDArray[np.bool_], rms: float
) -> tuple[npt.NDArray[Any], Image]:
    """The sources, and the image less its smooth background (what apertures measure)."""
    if not math.isfinite(rms) or rms <= 0:
        nothing = np.zeros(0, dtype=[("x", "f8"), ("y", "f8"), ("flux", "f8"), ("flag", "i4")])
        return nothing, image
    background = sep.Background(image, mask=saturated, bw=128, bh=128)
    residual: Image = image - background.back()
    sep.set_extract_pixstack(2_000_000)
    sep.set_sub_object_limit(4096)
    objects: npt.NDArray[Any] = sep.extract(
        residual, _DETECTION_SIGMA, err=rms, mask=saturated, minarea=5, deblend_cont=0.005
    )
    return objects, residual


def _psf_stars(
    image: Image, saturated: npt.NDArray[np.bool_], objects: npt.NDArray[Any], rms: float
) -> list[tuple[float, float, float]]:
    """(x, y, first guess of sigma) of the bright, clean, isolated sources."""
    if objects.size == 0:
        return []
    x, y = objects["x"], objects["y"]
    snr = objects["flux"] / (rms * np.sqrt(np.maximum(objects["npix"], 1)))
    guess = np.sqrt(np.clip((objects["x2"] + objects["y2"]) / 2.0, 0.25, 400.0))
    candidates = np.flatnonzero((objects["flag"] == 0) & (snr > _PSF_SNR))
    candidates = candidates[np.argsort(-objects["flux"][candidates])][:_MAX_PSF_STARS]
    chosen: list[tuple[float, float, float]] = []
    for i in candidates:
        radius = _stamp_radius(float(guess[i]))
        x0, y0 = round(float(x[i])), round(float(y[i]))
        if not (radius <= x0 < CCD_COLS - radius and radius <= y0 < CCD_ROWS - radius):
            continue  # a stamp must lie on the detector
        neighbours = np.hypot(x - x[i], y - y[i])
        neighbours[i] = np.inf
        if neighbours.min() < _ISOLATION * 2 * guess[i] + radius:
            continue
        if saturated[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1].any():
            continue
        chosen.append((float(x[i]), float(y[i]), float(guess[i])))
    return chosen


def _stamp_radius(sigma: float) -> int:
    return max(6, math.ceil(6 * sigma))


def _adaptive_moments(
    image: Image, x: float, y: float, sigma: float
) -> tuple[float, float, float] | None:
    """The star's second moments (pixels²) by Gaussian-weighted moments whose weight is
    matched to the star, iterated to the fixed point where the weight is the star; None
    if they do not converge (a blend, a cosmic ray)."""
    radius = _stamp_radius(sigma)
    x0, y0 = round(x), round(y)
    stamp = image[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1].astype(np.float64)
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    cx, cy = x - x0, y - y0
    cxx = cyy = sigma * sigma
    cxy = 0.0
    for _ in range(40):
        determinant = cxx * cyy - cxy * cxy
        if not (0 < cxx <= radius * radius and 0 < cyy <= radius * radius and determinant > 1e-6):
            return None  # diverging: not a star
        ux, uy = dx - cx, dy - cy
        weight = np.exp(-0.5 * (cyy * ux * ux - 2 * cxy * ux * uy + cxx * uy * uy) / determinant)
        weighted = weight * stamp
        total = weighted.sum()
        if not total > 0:
            return None
        cx += float((weighted * ux).sum() / total)
        cy += float((weighted * uy).sum() / total)
        mxx = 2.0 * float((weighted * ux * ux).sum() / total)
        myy = 2.0 * float((weighted * uy * uy).sum() / total)
        mxy = 2.0 * float((weighted * ux * uy).sum() / total)
        converged = abs(mxx - cxx) + abs(myy - cyy) + abs(mxy - cxy) < 1e-6 * (cxx + cyy)
        cxx, cyy, cxy = mxx, myy, mxy
        if converged:
            return cxx, cyy, cxy
    return None


def _summarise(
    moments: list[tuple[float, float, float]], pixel_scale: float
) -> dict[str, float | None]:
    if not moments:
        return {"psfFwhm": None, "psfE1": None, "psfE2": None, "ellipticity": None}
    ixx, iyy, ixy = (np.array(values) for values in zip(*moments, strict=True))
    sigma = (ixx * iyy - ixy * ixy) ** 0.25
    e1 = float(np.median((ixx - iyy) / (ixx + iyy)))
    e2 = float(np.median(2.0 * ixy / (ixx + iyy)))
    return {
        "psfFwhm": float(np.median(sigma)) * FWHM_PER_SIGMA * pixel_scale,
        "psfE1": e1,
        "psfE2": e2,
        "ellipticity": math.hypot(e1, e2),
    }


def image_summary(image: str, instrument: str, detectors: list[dict[str, Any]]) -> dict[str, Any]:
    """The image's ``imageQuality`` values (ICD 1.1) from its detectors' metrics: PSF
    and sky as medians over the detectors that have them, sources summed."""

    def values(name: str) -> list[float]:
        return [float(d[name]) for d in detectors if d.get(name) is not None]

    def median(name: str) -> float | None:
        found = values(name)
        return float(np.median(found)) if found else None

    fwhm = values("psfFwhm")
    e1, e2 = median("psfE1"), median("psfE2")
    return {
        "imageName": image,
        "instrument": instrument,
        "nSensors": len(detectors),
        "psfFwhm": median("psfFwhm"),
        "psfFwhmMin": min(fwhm) if fwhm else None,
        "psfFwhmMax": max(fwhm) if fwhm else None,
        "psfE1": e1,
        "psfE2": e2,
        "ellipticity": math.hypot(e1, e2) if e1 is not None and e2 is not None else None,
        "skyMean": median("skyMean"),
        "skyRms": median("skyRms"),
        "zeroPoint": median("zeroPoint"),
        "nSources": int(sum(values("nSources"))),
    }
