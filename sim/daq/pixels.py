"""Raw pixels that look like a real CCD's, synthesised fast and reproducibly.

For each detector: build the illumination in electrons on the 4072 x 4000 imaging area
(dark current, flat-field illumination with vignetting, sky, stars with a Gaussian PSF
whose width follows the seeing, cosmic-ray tracks), then cut it into the 16 raw
segments with the shared geometry, adding per-amplifier bias, gain, read noise, photon
noise, a deferred-charge trail into the serial overscan, and 18-bit saturation.

The stars are the sky's (:mod:`sim.daq.sky_catalog`), put on each detector through the
same celestial WCS the header service writes (:func:`cscs.camera.sky.detector_wcs`), so
a test can find them in the pixels and check the headers against the truth.

Speed: Gaussian noise is drawn from one process-wide pool of standard normals at a
random offset per segment, instead of ~19 M fresh draws per CCD. Each segment's noise
is still Gaussian with the configured width; only distant segments may share a run of
the pool, which no statistic of one segment can see. Everything is a function of the
seed, the detector and the segment, so the same image is the same pixels every time.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cscs.camera.geometry import (
    CCD_COLS,
    CCD_ROWS,
    IMAGING_COLS,
    IMAGING_ROWS,
    PRESCAN_COLS,
    SATURATION,
    SEGMENT_COLS,
    SEGMENT_ROWS,
    SEGMENTS,
    Camera,
    Detector,
    Segment,
)
from cscs.camera.sky import Pointing, detector_wcs
from sim.daq.sky_catalog import BANDS, StarCounts, band_magnitudes, stars_near

__all__ = [
    "DEFAULT_POINTING",
    "IMAGE_TYPES",
    "Amplifier",
    "DetectorStars",
    "ElectronicsModel",
    "Scene",
    "SkyModel",
    "amplifier",
    "detector_stars",
    "synthesize_sensor",
]

Pixels = npt.NDArray[np.int32]
_POOL_SIZE = 1 << 22
_SEGMENT_PIXELS = SEGMENT_ROWS * SEGMENT_COLS
_IMAGING_PIXELS = IMAGING_ROWS * IMAGING_COLS
IMAGE_TYPES = ("BIAS", "DARK", "FLAT", "OBJECT", "ENGTEST")


class ElectronicsModel(BaseModel):
    """The camera's electronics, as configured; each amplifier varies around it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bias_level: float = 20000.0  # ADU
    bias_spread: float = 1500.0  # ADU, amplifier-to-amplifier (uniform ±)
    read_noise: float = 6.0  # electrons
    read_noise_spread: float = 0.15  # fraction, amplifier-to-amplifier (uniform ±)
    gain: float = 1.6  # electrons per ADU
    gain_spread: float = 0.1  # fraction
    dark_current: float = 0.02  # electrons / pixel / s
    serial_cti: float = 2e-5  # fraction of a pixel's charge left behind per transfer
    seed: int = 0  # selects the amplifiers (a camera's hardware does not change)


class SkyModel(BaseModel):
    """What the sky and the calibration screen look like, as configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeing_fwhm: float = 0.8  # arcsec
    sky_rate: float = 20.0  # electrons / pixel / s
    flat_level: float = 30000.0  # electrons / pixel at the centre
    # ~400 stars on a 0.05 deg² ComCam/LSSTCam CCD, ~100 on LATISS's (0.1"/pixel).
    star_density: float = Field(default=8000.0, ge=0.0, le=100_000.0)  # per deg², to faint
    bright_magnitude: float = 14.0  # the brightest saturate in a 30 s ComCam exposure
    faint_magnitude: float = 19.75
    # The magnitude that gives 1 electron / s at the zenith (airmass 1), per band: the
    # relative throughputs of the Simonyi telescope's filters. A band not listed (a
    # LATISS grating alone, "white") takes r's.
    zero_points: dict[str, float] = {
        "u": 26.1, "g": 28.1, "r": 28.0, "i": 27.8, "z": 27.4, "y": 26.4
    }  # fmt: skip
    # Atmospheric extinction, magnitudes per airmass (Cerro Pachón's, roughly).
    extinction: dict[str, float] = {
        "u": 0.47, "g": 0.21, "r": 0.13, "i": 0.10, "z": 0.07, "y": 0.17
    }  # fmt: skip
    catalog_seed: int = Field(default=0, ge=0)  # selects the stars: the sky never changes
    cosmic_rays_per_second: float = 1.0  # per CCD

    @model_validator(mode="after")
    def _magnitudes_in_order(self) -> SkyModel:
        if not self.bright_magnitude < self.faint_magnitude:
            raise ValueError("bright_magnitude must be less (brighter) than faint_magnitude")
        return self

    @model_validator(mode="after")
    def _r_is_known(self) -> SkyModel:
        for table in ("zero_points", "extinction"):
            if "r" not in getattr(self, table):
                raise ValueError(f"{table} needs r: the band every other falls back on")
        return self

    @property
    def star_counts(self) -> StarCounts:
        return StarCounts(self.star_density, self.bright_magnitude, self.faint_magnitude)

    def zero_point(self, band: str, airmass: float) -> float:
        """The magnitude that gives 1 electron / s in ``band`` through ``airmass``: the
        truth that ``image-qc``'s zero point (per ADU, so less 2.5 log10 gain) measures."""
        known = band if band in self.zero_points else "r"
        extinction = self.extinction.get(known, self.extinction["r"])
        return self.zero_points[known] - extinction * (airmass - 1.0)


# Where a camera looks until it hears from its telescope: the simulated telescope's
# first target (Dec -85 never sets at Cerro Pachón).
DEFAULT_POINTING = Pointing(ra=0.0, dec=-85.0, rotation=0.0)


@dataclass(frozen=True)
class Scene:
    """What one exposure sees."""

    image_type: str
    exposure_time: float  # s
    dark_time: float  # s
    seed: int
    camera: Camera = Camera.COMCAM  # the pixel scale and where each detector looks
    pointing: Pointing = DEFAULT_POINTING  # at the start of the exposure
    sky: SkyModel = field(default_factory=SkyModel)
    band: str = "r"  # of the filter in the beam
    airmass: float = 1.0  # at the start of the exposure

    @property
    def zero_point(self) -> float:
        """The magnitude that gives 1 electron / s in this exposure."""
        return self.sky.zero_point(self.band, self.airmass)


@dataclass(frozen=True)
class Amplifier:
    bias: float  # ADU
    read_noise: float  # electrons
    gain: float  # electrons / ADU

    @property
    def read_noise_adu(self) -> float:
        return self.read_noise / self.gain


def _stable_seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def amplifier(model: ElectronicsModel, detector: Detector, segment: Segment) -> Amplifier:
    """The fixed properties of one amplifier: what tests and analysis compare against."""
    rng = np.random.default_rng(_stable_seed(model.seed, detector.name, segment.name))
    u = rng.uniform(-1.0, 1.0, size=3)
    return Amplifier(
        bias=model.bias_level + model.bias_spread * u[0],
        read_noise=model.read_noise * (1.0 + model.read_noise_spread * u[1]),
        gain=model.gain * (1.0 + model.gain_spread * u[2]),
    )


@functools.cache
def _normal_pool() -> npt.NDArray[np.float32]:
    return np.random.default_rng(20261121).standard_normal(_POOL_SIZE, dtype=np.float32)


def _noise(rng: np.random.Generator, size: int) -> npt.NDArray[np.float32]:
    """``size`` standard normals (a read-only view into the pool)."""
    pool = _normal_pool()
    start = int(rng.integers(0, _POOL_SIZE - size))
    return pool[start : start + size]


def _illumination(
    model: ElectronicsModel, scene: Scene, detector: Detector, rng: np.random.Generator
) -> npt.NDArray[np.float32] | None:
    """Expected electrons per imaging pixel, detector orientation; None for none."""
    kind = scene.image_type
    if kind == "BIAS":
        return None
    if kind == "FLAT":
        # Separable vignetting: 8% fall-off from centre to the corners.
        x = np.linspace(-1.0, 1.0, CCD_COLS, dtype=np.float32)
        y = np.linspace(-1.0, 1.0, CCD_ROWS, dtype=np.float32)
        vignetting = np.outer(1.0 - 0.04 * y**2, 1.0 - 0.04 * x**2).astype(np.float32)
        vignetting *= np.float32(scene.sky.flat_level)
        vignetting += np.float32(model.dark_current * scene.dark_time)
        return vignetting
    level = model.dark_current * scene.dark_time
    electrons = np.empty((CCD_ROWS, CCD_COLS), dtype=np.float32)
    if kind in ("OBJECT", "ENGTEST"):
        level += scene.sky.sky_rate * scene.exposure_time
    electrons.fill(level)
    if kind in ("OBJECT", "ENGTEST") and scene.exposure_time > 0:
        _add_stars(electrons, scene, detector)
    _add_cosmic_rays(electrons, scene.dark_time * scene.sky.cosmic_rays_per_second, rng)
    return electrons


def _psf_sigma(scene: Scene) -> float:
    """The Gaussian PSF's width in pixels (at least half a pixel: stars stay round)."""
    return max(scene.sky.seeing_fwhm / 2.3548 / scene.camera.pixel_scale, 0.5)


def _psf_radius(sigma: float) -> int:
    return math.ceil(4 * sigma)


@dataclass(frozen=True)
class DetectorStars:
    """The catalog's stars whose light can reach one detector: 0-based pixel
    coordinates (``electrons[row, col]`` has its centre at ``(col, row)``), which is
    the FITS position less one, and magnitudes."""

    col: npt.NDArray[np.float64]
    row: npt.NDArray[np.float64]
    magnitude: npt.NDArray[np.float64]  # r
    colour: npt.NDArray[np.float64]  # g - r

    def magnitudes(self, band: str) -> npt.NDArray[np.float64]:
        """In ``band``; a band the catalog does not know is r."""
        return band_magnitudes(self.magnitude, self.colour, band if band in BANDS else "r")


@functools.lru_cache(maxsize=512)  # every detector of LSSTCam at two pointings
def detector_stars(
    camera: Camera,
    detector: Detector,
    pointing: Pointing,
    counts: StarCounts,
    catalog_seed: int,
    margin: int,
) -> DetectorStars:
    """Every star of the catalog whose centre is on ``detector`` or within ``margin``
    pixels of it (its light spills on), as ``camera`` sees it at ``pointing``."""
    wcs = detector_wcs(camera, detector, pointing)
    centre_ra, centre_dec = wcs.pixel_to_sky(
        np.array([(CCD_COLS + 1) / 2]), np.array([(CCD_ROWS + 1) / 2])
    )
    # The gnomonic projection only shrinks distances off its axis, so the corners are
    # no farther on the sky than their distance in pixels at the nominal scale.
    half_diagonal = math.hypot(CCD_COLS / 2 + margin + 1, CCD_ROWS / 2 + margin + 1)
    radius = half_diagonal * camera.pixel_scale / 3600.0
    stars = stars_near(float(centre_ra[0]), float(centre_dec[0]), radius, counts, catalog_seed)
    x, y = wcs.sky_to_pixel(stars.ra, stars.dec)
    col, row = x - 1.0, y - 1.0  # FITS pixel centres are at integers from 1
    with np.errstate(invalid="ignore"):
        near = (
            (col >= -0.5 - margin)
            & (col <= CCD_COLS - 0.5 + margin)
            & (row >= -0.5 - margin)
            & (row <= CCD_ROWS - 0.5 + margin)
        )
    columns = (col, row, stars.magnitude, stars.colour)
    return DetectorStars(*(_readonly(a[near]) for a in columns))


def _readonly(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    values.flags.writeable = False  # shared by every image of the field (cached)
    return values


def _add_stars(electrons: npt.NDArray[np.float32], scene: Scene, detector: Detector) -> None:
    sigma = _psf_sigma(scene)
    radius = _psf_radius(sigma)
    sky = scene.sky
    stars = detector_stars(
        scene.camera, detector, scene.pointing, sky.star_counts, sky.catalog_seed, radius
    )
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    magnitudes = stars.magnitudes(scene.band)
    fluxes = scene.exposure_time * 10.0 ** (-0.4 * (magnitudes - scene.zero_point))
    for x, y, flux in zip(stars.col, stars.row, fluxes, strict=True):
        cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)  # the pixel the centre falls in
        gx = np.exp(-0.5 * ((offsets + (cx - x)) / sigma) ** 2)
        gy = np.exp(-0.5 * ((offsets + (cy - y)) / sigma) ** 2)
        stamp = np.outer(gy, gx)
        stamp *= flux / stamp.sum()  # what falls off the detector is lost, as it would be
        x0, y0 = cx - radius, cy - radius
        sx0, sy0 = max(0, -x0), max(0, -y0)
        x1, y1 = min(CCD_COLS, x0 + stamp.shape[1]), min(CCD_ROWS, y0 + stamp.shape[0])
        electrons[max(0, y0) : y1, max(0, x0) : x1] += stamp[
            sy0 : sy0 + y1 - max(0, y0), sx0 : sx0 + x1 - max(0, x0)
        ]


def _add_cosmic_rays(
    electrons: npt.NDArray[np.float32], expected: float, rng: np.random.Generator
) -> None:
    for _ in range(int(rng.poisson(expected))):
        length = int(rng.integers(1, 25))
        angle = rng.uniform(0, math.pi)
        x0, y0 = rng.uniform(0, CCD_COLS), rng.uniform(0, CCD_ROWS)
        steps = np.arange(length)
        xs = np.clip((x0 + steps * math.cos(angle)).astype(int), 0, CCD_COLS - 1)
        ys = np.clip((y0 + steps * math.sin(angle)).astype(int), 0, CCD_ROWS - 1)
        electrons[ys, xs] += rng.uniform(800, 6000, length).astype(np.float32)


def _segment_pixels(
    amp: Amplifier,
    cti: float,
    segment: Segment,
    electrons: npt.NDArray[np.float32] | None,
    rng: np.random.Generator,
) -> Pixels:
    raw = np.multiply(
        _noise(rng, _SEGMENT_PIXELS).reshape(SEGMENT_ROWS, SEGMENT_COLS),
        np.float32(amp.read_noise_adu),
    )
    raw += np.float32(amp.bias + 0.5)  # + 0.5: the cast below truncates
    if electrons is not None:
        signal = electrons[segment.detector_slice()]
        photon = np.sqrt(signal)
        photon *= _noise(rng, _IMAGING_PIXELS).reshape(IMAGING_ROWS, IMAGING_COLS)
        photon += signal
        photon *= np.float32(1.0 / amp.gain)
        imaging = raw[segment.imaging_slice]
        imaging += photon
        # Deferred charge: after 509 serial transfers the last imaging column leaves a
        # fading trail in the first overscan columns.
        last = photon[:, -1]
        trail = raw[:IMAGING_ROWS, PRESCAN_COLS + IMAGING_COLS :][:, :3]
        for k in range(trail.shape[1]):
            trail[:, k] += last * np.float32(IMAGING_COLS * cti * 0.3**k)
    np.clip(raw, 0, SATURATION, out=raw)
    return raw.astype(np.int32)


def synthesize_sensor(model: ElectronicsModel, scene: Scene, detector: Detector) -> list[Pixels]:
    """One detector's 16 raw segments (int32, 2048 x 576), in file order."""
    if scene.image_type not in IMAGE_TYPES:
        raise ValueError(f"unknown image type {scene.image_type!r}; one of {IMAGE_TYPES}")
    rng = np.random.default_rng(_stable_seed(scene.seed, detector.name))
    electrons = _illumination(model, scene, detector, rng)
    if electrons is not None:
        np.maximum(electrons, 0, out=electrons)
    return [
        _segment_pixels(
            amplifier(model, detector, segment), model.serial_cti, segment, electrons, rng
        )
        for segment in SEGMENTS
    ]
