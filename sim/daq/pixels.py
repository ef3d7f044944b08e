"""Raw pixels that look like a real CCD's, synthesised fast and reproducibly.

For each detector: build the illumination in electrons on the 4072 x 4000 imaging area
(dark current, flat-field illumination with vignetting, sky, stars with a Gaussian PSF
whose width follows the seeing, cosmic-ray tracks), then cut it into the 16 raw
segments with the shared geometry, adding per-amplifier bias, gain, read noise, photon
noise, a deferred-charge trail into the serial overscan, and 18-bit saturation.

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
from pydantic import BaseModel, ConfigDict

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
    Detector,
    Segment,
)

__all__ = [
    "IMAGE_TYPES",
    "Amplifier",
    "ElectronicsModel",
    "Scene",
    "SkyModel",
    "amplifier",
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
    stars_per_ccd: int = 400
    cosmic_rays_per_second: float = 1.0  # per CCD


@dataclass(frozen=True)
class Scene:
    """What one exposure sees."""

    image_type: str
    exposure_time: float  # s
    dark_time: float  # s
    seed: int
    pixel_scale: float = 0.2  # arcsec / pixel
    sky: SkyModel = field(default_factory=SkyModel)


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
    model: ElectronicsModel, scene: Scene, rng: np.random.Generator
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
        _add_stars(electrons, scene, rng)
    _add_cosmic_rays(electrons, scene.dark_time * scene.sky.cosmic_rays_per_second, rng)
    return electrons


def _add_stars(electrons: npt.NDArray[np.float32], scene: Scene, rng: np.random.Generator) -> None:
    sigma = max(scene.sky.seeing_fwhm / 2.3548 / scene.pixel_scale, 0.5)
    radius = math.ceil(4 * sigma)
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    count = int(rng.poisson(scene.sky.stars_per_ccd))
    # Brightness follows a power law: many faint stars, a few bright enough to saturate.
    fluxes = 2e3 * (1.0 - rng.random(count)) ** -1.5 * scene.exposure_time
    xs = rng.uniform(0, CCD_COLS, count)
    ys = rng.uniform(0, CCD_ROWS, count)
    for x, y, flux in zip(xs, ys, fluxes, strict=True):
        cx, cy = int(x), int(y)
        gx = np.exp(-0.5 * ((offsets + (cx - x)) / sigma) ** 2)
        gy = np.exp(-0.5 * ((offsets + (cy - y)) / sigma) ** 2)
        stamp = np.outer(gy, gx)
        stamp *= flux / stamp.sum()
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
    electrons = _illumination(model, scene, rng)
    if electrons is not None:
        np.maximum(electrons, 0, out=electrons)
    return [
        _segment_pixels(
            amplifier(model, detector, segment), model.serial_cti, segment, electrons, rng
        )
        for segment in SEGMENTS
    ]
