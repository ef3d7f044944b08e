"""Pixel synthesis: the statistics an analyst would check on real raw data."""

from __future__ import annotations

import numpy as np
import pytest

from cscs.camera.geometry import SATURATION, SEGMENTS, Camera
from sim.daq.pixels import (
    ElectronicsModel,
    Pixels,
    Scene,
    SkyModel,
    amplifier,
    synthesize_sensor,
)

DETECTOR = Camera.COMCAM.detector("R22_S11")
MODEL = ElectronicsModel(dark_current=1.0)  # dark signal large enough to measure
SERIAL_OVERSCAN = (slice(0, 2000), slice(518, 576))  # past the deferred-charge trail
PRESCAN = (slice(0, 2000), slice(0, 3))
PARALLEL_OVERSCAN = (slice(2000, 2048), slice(3, 512))
IMAGING = (slice(0, 2000), slice(3, 512))


def synthesize(kind: str, exposure: float = 0.0, dark: float = 0.0, seed: int = 7) -> list[Pixels]:
    scene = Scene(kind, exposure, dark, seed=seed, camera=Camera.COMCAM, sky=SkyModel())
    return synthesize_sensor(MODEL, scene, DETECTOR)


@pytest.fixture(scope="module")
def bias() -> list[Pixels]:
    return synthesize("BIAS")


def test_layout_dtype_and_range(bias: list[Pixels]) -> None:
    assert len(bias) == 16
    for pixels in bias:
        assert pixels.dtype == np.int32
        assert pixels.shape == (2048, 576)
        assert pixels.min() >= 0
        assert pixels.max() <= SATURATION


def test_bias_level_and_read_noise_per_amplifier(bias: list[Pixels]) -> None:
    """Overscan, prescan and (for a bias) imaging pixels sit at the amplifier's bias,
    with the configured read noise (converted to ADU by its gain)."""
    levels = []
    for segment, pixels in zip(SEGMENTS, bias, strict=True):
        amp = amplifier(MODEL, DETECTOR, segment)
        levels.append(amp.bias)
        for region in (SERIAL_OVERSCAN, PRESCAN, PARALLEL_OVERSCAN, IMAGING):
            assert pixels[region].mean() == pytest.approx(amp.bias, abs=0.5), segment.name
        noise = pixels[SERIAL_OVERSCAN].std()
        assert noise == pytest.approx(amp.read_noise_adu, rel=0.03), segment.name
    # Amplifiers differ from each other, as on a real CCD, around the configured level.
    assert np.std(levels) > 100
    assert np.mean(levels) == pytest.approx(MODEL.bias_level, abs=MODEL.bias_spread)


def test_dark_current_accumulates_over_the_dark_time() -> None:
    dark = synthesize("DARK", exposure=0.0, dark=100.0)
    for segment, pixels in zip(SEGMENTS, dark, strict=True):
        amp = amplifier(MODEL, DETECTOR, segment)
        expected = MODEL.dark_current * 100.0 / amp.gain
        assert np.median(pixels[IMAGING]) - amp.bias == pytest.approx(expected, rel=0.05)
        assert pixels[SERIAL_OVERSCAN].mean() == pytest.approx(amp.bias, abs=0.5)


def test_flat_level_photon_noise_and_overscan_trail() -> None:
    flat = synthesize("FLAT", exposure=10.0, dark=10.0)
    sky = SkyModel()
    for segment, pixels in zip(SEGMENTS, flat, strict=True):
        amp = amplifier(MODEL, DETECTOR, segment)
        # Vignetting: at most 8% below the configured level, never above it.
        level = (np.median(pixels[IMAGING]) - amp.bias) * amp.gain
        assert 0.9 * sky.flat_level < level < 1.01 * sky.flat_level
        patch = pixels[900:1000, 200:300].astype(float) - amp.bias
        expected_noise = np.sqrt(patch.mean() * amp.gain + amp.read_noise**2) / amp.gain
        assert patch.std() == pytest.approx(expected_noise, rel=0.1)
        # Deferred charge: the first overscan column carries a trail, later ones do not.
        first = pixels[0:2000, 512].mean() - amp.bias
        assert first > 20 * amp.read_noise_adu / np.sqrt(2000)
        assert pixels[SERIAL_OVERSCAN].mean() == pytest.approx(amp.bias, abs=1.0)


def test_object_has_sky_stars_and_saturation() -> None:
    exposure = 30.0
    image = synthesize("OBJECT", exposure=exposure, dark=exposure)
    sky = SkyModel()
    saturated = 0
    for segment, pixels in zip(SEGMENTS, image, strict=True):
        amp = amplifier(MODEL, DETECTOR, segment)
        background = (np.median(pixels[IMAGING]) - amp.bias) * amp.gain
        assert background == pytest.approx(
            sky.sky_rate * exposure + MODEL.dark_current * exposure, rel=0.05
        )
        saturated += int((pixels == SATURATION).sum())
    brightest = max(int(p[IMAGING].max()) for p in image)
    assert brightest == SATURATION  # the brightest stars saturate the 18-bit ADC
    assert saturated > 0


def test_synthesis_is_deterministic_from_the_seed() -> None:
    a = synthesize("OBJECT", exposure=5.0, dark=5.0, seed=3)
    b = synthesize("OBJECT", exposure=5.0, dark=5.0, seed=3)
    c = synthesize("OBJECT", exposure=5.0, dark=5.0, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_unknown_image_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown image type 'SKYFLAT'"):
        synthesize("SKYFLAT")
