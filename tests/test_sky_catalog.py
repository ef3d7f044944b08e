"""The simulator's sky: a catalog fixed on the sphere, found again in the pixels where
the detector's WCS says it is, and the camera pointing where its telescope does."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from cscs.camera.events import FOCAL_PLANE_SUMMARY_INFO, FocalPlaneSummaryInfo
from cscs.camera.geometry import CCD_COLS, CCD_ROWS, IMAGING_ROWS, SEGMENTS, Camera, Detector
from cscs.camera.sky import Pointing, detector_wcs
from cscs.core.protocol import encode
from cscs.core.remote import EventStream
from cscs.core.settings import Settings
from cscs.core.tai import current_tai
from cscs.core.testing import MemoryBroker, make_csc
from cscs.core.topics import CscAddress
from sim.daq import sky_catalog
from sim.daq.camera import CameraCsc
from sim.daq.hardware import focal_plane_hardware
from sim.daq.pixels import (
    DEFAULT_POINTING,
    ElectronicsModel,
    Scene,
    SkyModel,
    amplifier,
    synthesize_sensor,
)
from sim.daq.sky_catalog import StarCatalog, StarCounts, cell_of, stars_near

Floats = npt.NDArray[np.float64]
COUNTS = SkyModel().star_counts


def separation(ra0: float, dec0: float, ra: Floats, dec: Floats) -> Floats:
    """Degrees between (ra0, dec0) and each star, from unit vectors (not the haversine
    the catalog uses)."""
    a, d = np.radians(ra), np.radians(dec)
    a0, d0 = math.radians(ra0), math.radians(dec0)
    dot = np.sin(d) * math.sin(d0) + np.cos(d) * math.cos(d0) * np.cos(a - a0)
    return np.degrees(np.arccos(np.clip(dot, -1.0, 1.0)))


def rows(catalog: StarCatalog) -> set[tuple[float, float, float]]:
    columns = (catalog.ra.tolist(), catalog.dec.tolist(), catalog.magnitude.tolist())
    return set(zip(*columns, strict=True))


def subset(catalog: StarCatalog, keep: npt.NDArray[np.bool_]) -> StarCatalog:
    return StarCatalog(
        catalog.ra[keep], catalog.dec[keep], catalog.magnitude[keep], catalog.colour[keep]
    )


# ---- the catalog -----------------------------------------------------------------------


def test_the_catalog_is_the_same_every_time_and_differs_by_seed() -> None:
    first = stars_near(150.0, -30.0, 0.4, COUNTS, seed=3)
    sky_catalog.cell_stars.cache_clear()  # drawn again, not remembered
    again = stars_near(150.0, -30.0, 0.4, COUNTS, seed=3)
    other = stars_near(150.0, -30.0, 0.4, COUNTS, seed=4)
    for a, b in ((first.ra, again.ra), (first.dec, again.dec), (first.magnitude, again.magnitude)):
        assert np.array_equal(a, b)
    assert rows(first) != rows(other)
    assert len(first) > 1000


def test_overlapping_fields_see_the_same_stars() -> None:
    """A dither sees the stars it shares with the first pointing, to the last bit."""
    a = stars_near(150.0, -30.0, 0.3, COUNTS)
    b = stars_near(150.25, -30.1, 0.3, COUNTS)
    in_a_near_b = separation(150.25, -30.1, a.ra, a.dec) < 0.3 - 1e-9
    in_b_near_a = separation(150.0, -30.0, b.ra, b.dec) < 0.3 - 1e-9
    shared = rows(a) & rows(b)
    assert len(shared) > 500
    assert rows(subset(a, in_a_near_b)) == shared
    assert int(in_b_near_a.sum()) == len(shared)


def test_every_star_within_the_radius_and_none_beyond() -> None:
    """Compared with a brute-force cut of a much larger query."""
    wide = stars_near(30.0, 45.0, 1.5, COUNTS)
    near = stars_near(30.4, 45.3, 0.5, COUNTS)
    inside = separation(30.4, 45.3, wide.ra, wide.dec) <= 0.5
    assert rows(near) == rows(subset(wide, inside))


def test_a_field_across_ra_zero_sees_both_sides() -> None:
    field = stars_near(0.1, 0.0, 0.3, COUNTS)
    assert (field.ra > 359.8).any()
    assert (field.ra < 0.4).any()
    assert (separation(0.1, 0.0, field.ra, field.dec) <= 0.3).all()
    other_side = stars_near(359.9, 0.0, 0.3, COUNTS)
    # The stars both fields see, seen from either side of RA 0.
    both = separation(359.9, 0.0, field.ra, field.dec) <= 0.3
    assert both.sum() > 300
    assert rows(subset(field, both)) <= rows(other_side)


def test_a_field_over_the_pole() -> None:
    radius = 0.5
    field = stars_near(123.0, -89.9, radius, COUNTS)
    assert (separation(123.0, -89.9, field.ra, field.dec) <= radius).all()
    assert np.ptp(field.ra) > 350  # around the pole, on every side
    cap = stars_near(0.0, -90.0, 1.0, COUNTS)
    inside = separation(123.0, -89.9, cap.ra, cap.dec) <= radius
    assert rows(field) == rows(subset(cap, inside))
    expected = (
        COUNTS.density * 2 * math.pi * (1 - math.cos(math.radians(radius))) * (180 / math.pi) ** 2
    )
    assert abs(len(field) - expected) < 4 * math.sqrt(expected)


@pytest.mark.parametrize(("ra", "dec"), [(45.0, -45.0), (200.0, 2.0), (300.0, 80.0)])
def test_density_and_number_counts_are_as_configured(ra: float, dec: float) -> None:
    radius = 1.5
    field = stars_near(ra, dec, radius, COUNTS)
    area = 2 * math.pi * (1 - math.cos(math.radians(radius))) * (180 / math.pi) ** 2
    expected = COUNTS.density * area
    assert abs(len(field) - expected) < 4 * math.sqrt(expected)
    assert field.magnitude.min() >= COUNTS.bright_magnitude
    assert field.magnitude.max() <= COUNTS.faint_magnitude
    # N(<m) ∝ 10^(0.3 m): the share of stars brighter than m.
    m = 18.0
    law = (10 ** (0.3 * m) - 10 ** (0.3 * COUNTS.bright_magnitude)) / (
        10 ** (0.3 * COUNTS.faint_magnitude) - 10 ** (0.3 * COUNTS.bright_magnitude)
    )
    brighter = int((field.magnitude < m).sum())
    assert abs(brighter - law * len(field)) < 4 * math.sqrt(law * (1 - law) * len(field))


def test_stars_live_in_their_cells() -> None:
    """A cell's stars never depend on who asks: each star's home is where it lies."""
    field = stars_near(10.0, -60.0, 0.6, COUNTS)
    homes = {cell_of(r, d) for r, d in zip(field.ra.tolist(), field.dec.tolist(), strict=True)}
    assert 4 <= len(homes) <= 20


def test_places_not_on_the_sky_are_refused() -> None:
    with pytest.raises(ValueError, match="no such place"):
        stars_near(0.0, -91.0, 0.1, COUNTS)
    with pytest.raises(ValueError, match="no such place"):
        stars_near(math.nan, 0.0, 0.1, COUNTS)
    with pytest.raises(ValueError, match="bright_magnitude"):
        StarCounts(8000.0, 20.0, 19.0)


# ---- the hardware ----------------------------------------------------------------------


@pytest.mark.parametrize("camera", list(Camera))
def test_every_detector_has_its_own_fixed_ccd(camera: Camera) -> None:
    info = focal_plane_hardware(camera)
    FocalPlaneSummaryInfo.model_validate(info.model_dump())  # what a consumer accepts
    ccds = info.by_detector()
    assert list(ccds) == [d.name for d in camera.detectors]
    assert {c.manufacturer for c in ccds.values()} == {"ITL"}
    assert {c.type for c in ccds.values()} == {"3800C"}
    assert all(re.fullmatch(r"ITL-3800C-\d{3}", c.lsst_name) for c in ccds.values())
    assert all(re.fullmatch(r"[1-9]\d{4}", c.serial) for c in ccds.values())
    assert len({c.lsst_name for c in ccds.values()}) == len(ccds)
    assert len({c.serial for c in ccds.values()}) == len(ccds)
    focal_plane_hardware.cache_clear()
    assert focal_plane_hardware(camera) == info


def test_hardware_does_not_change_between_versions() -> None:
    """Pinned: headers of one slot must name the same CCD across releases."""
    latiss = focal_plane_hardware(Camera.LATISS).by_detector()["R00_S00"]
    comcam = focal_plane_hardware(Camera.COMCAM).by_detector()["R22_S11"]
    assert (latiss.lsst_name, latiss.serial) == PINNED_LATISS
    assert (comcam.lsst_name, comcam.serial) == PINNED_COMCAM


PINNED_LATISS = ("ITL-3800C-524", "58933")
PINNED_COMCAM = ("ITL-3800C-448", "35906")


# ---- the stars in the pixels -----------------------------------------------------------

MODEL = ElectronicsModel()
WINDOW_SIGMAS = 3.0  # the centroid window's half-width


def detector_electrons(scene: Scene, detector: Detector) -> Floats:
    """The detector image in electrons, [row, column] (FITS x - 1, y - 1), assembled from
    the raw segments as an analyst would: bias from each serial overscan."""
    image = np.empty((CCD_ROWS, CCD_COLS))
    for segment, raw in zip(SEGMENTS, synthesize_sensor(MODEL, scene, detector), strict=True):
        bias = np.median(raw[:IMAGING_ROWS, -48:])  # past the deferred-charge trail
        gain = amplifier(MODEL, detector, segment).gain
        image[segment.detector_slice()] = (raw[segment.imaging_slice] - bias) * gain
    return image


def find_stars(image: Floats, threshold: float, half: int) -> Floats:
    """(x, y) in 1-based FITS pixels of every local maximum above ``threshold`` electrons
    over the background with no brighter one within ``2 * half`` pixels: the
    flux-weighted centroid in a window of ``half`` pixels each side, re-centred twice."""
    signal = image - np.median(image)
    rows_, cols_ = np.nonzero(signal > threshold)
    inner = (
        (rows_ >= half) & (rows_ < CCD_ROWS - half) & (cols_ >= half) & (cols_ < CCD_COLS - half)
    )
    rows_, cols_ = rows_[inner], cols_[inner]
    values = signal[rows_, cols_]
    neighbours = np.max(
        [signal[rows_ + dr, cols_ + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc],
        axis=0,
    )
    is_peak = values >= neighbours
    peaks = list(zip(rows_[is_peak].tolist(), cols_[is_peak].tolist(), strict=True))
    peaks.sort(key=lambda p: -signal[p])  # brightest first: a plateau keeps one pixel
    kept: list[tuple[int, int]] = []
    for r, c in peaks:
        if all(max(abs(r - kr), abs(c - kc)) > 2 * half for kr, kc in kept):
            kept.append((r, c))
    found = []
    for r, c in kept:
        y, x = float(r), float(c)
        for _ in range(3):
            r0, c0 = round(y), round(x)
            if not (half <= r0 < CCD_ROWS - half and half <= c0 < CCD_COLS - half):
                break
            box = np.clip(signal[r0 - half : r0 + half + 1, c0 - half : c0 + half + 1], 0, None)
            offsets = np.arange(-half, half + 1)
            y = r0 + float((box.sum(axis=1) * offsets).sum() / box.sum())
            x = c0 + float((box.sum(axis=0) * offsets).sum() / box.sum())
        found.append((x + 1.0, y + 1.0))
    return np.array(found).reshape(-1, 2)


def catalog_on_detector(camera: Camera, detector: Detector, pointing: Pointing) -> Floats:
    """(x, y, magnitude) of every catalog star near the detector, by its WCS alone."""
    wcs = detector_wcs(camera, detector, pointing)
    ra0, dec0 = wcs.pixel_to_sky(np.array([CCD_COLS / 2]), np.array([CCD_ROWS / 2]))
    radius = math.hypot(CCD_COLS, CCD_ROWS) * camera.pixel_scale / 3600.0
    stars = stars_near(float(ra0[0]), float(dec0[0]), radius, COUNTS)
    x, y = wcs.sky_to_pixel(stars.ra, stars.dec)
    return np.column_stack([x, y, stars.magnitude])


FIELDS = [
    # LATISS's one CCD on a field across RA 0, rotated.
    (Camera.LATISS, "R00_S00", Pointing(0.03, -30.0, 37.0), 300.0),
    # A ComCam corner CCD, far from the optical axis.
    (Camera.COMCAM, "R22_S00", Pointing(210.3, -60.0, -25.0), 30.0),
    # An LSSTCam CCD at the edge of the focal plane, with the pole in the field.
    (Camera.LSSTCAM, "R41_S21", Pointing(123.0, -89.5, 80.0), 30.0),
]


@pytest.mark.parametrize(("camera", "name", "pointing", "exposure"), FIELDS)
def test_stars_in_the_pixels_are_where_the_wcs_puts_the_catalog(
    camera: Camera, name: str, pointing: Pointing, exposure: float
) -> None:
    detector = camera.detector(name)
    sky = SkyModel()
    scene = Scene("OBJECT", exposure, exposure, seed=5, camera=camera, pointing=pointing, sky=sky)
    sigma = sky.seeing_fwhm / 2.3548 / camera.pixel_scale
    half = math.ceil(WINDOW_SIGMAS * sigma)
    threshold = 20_000.0  # electrons: above any cosmic ray's pixel (6000 at most)
    found = find_stars(detector_electrons(scene, detector), threshold, half)
    truth = catalog_on_detector(camera, detector, pointing)
    flux = exposure * 10 ** (-0.4 * (truth[:, 2] - scene.zero_point))
    assert len(found) >= 15

    # Each star found is a catalog star, where the WCS says, well within a pixel.
    offsets = found[:, None, :] - truth[None, :, :2]
    distance = np.hypot(offsets[..., 0], offsets[..., 1])
    nearest = distance.argmin(axis=1)
    best = distance[np.arange(len(found)), nearest]
    # A neighbour at least a tenth as bright within the window skews a centroid: not
    # isolated, so not a test of the WCS.
    near = distance < 2 * half
    crowded = (near & (flux[None, :] > 0.1 * flux[nearest][:, None])).sum(axis=1) > 1
    isolated = best[~crowded]
    assert len(isolated) >= 0.8 * len(found)
    assert isolated.max() < 1.0
    assert np.median(isolated) < 0.1  # no half-pixel slip between conventions
    dx, dy = (found - truth[nearest, :2])[~crowded].T
    assert abs(dx.mean()) < 0.05
    assert abs(dy.mean()) < 0.05

    # Most bright catalog stars on the detector are found.
    peak = flux / (2 * math.pi * sigma**2)
    on = (
        (truth[:, 0] > half + 1) & (truth[:, 0] < CCD_COLS - half)
        & (truth[:, 1] > half + 1) & (truth[:, 1] < CCD_ROWS - half)
    )  # fmt: skip
    bright = np.flatnonzero(on & (peak > 3 * threshold))
    apart = np.hypot(*(truth[bright, None, :2] - truth[None, :, :2]).transpose(2, 0, 1))
    alone = ((apart < 4 * half) & (flux[None, :] > 0.1 * flux[bright, None])).sum(axis=1) == 1
    bright = bright[alone]
    assert len(bright) >= 10
    to_found = np.hypot(*(truth[bright, None, :2] - found[None, :, :]).transpose(2, 0, 1))
    assert (to_found.min(axis=1) < 1.0).mean() >= 0.9


def test_the_same_field_gives_the_same_stars_in_every_image() -> None:
    """Two images of one pointing differ in noise and cosmic rays, not in stars."""
    camera, detector = Camera.LATISS, Camera.LATISS.detector("R00_S00")
    sky = SkyModel(cosmic_rays_per_second=0.0)
    images = [
        detector_electrons(
            Scene("OBJECT", 120.0, 120.0, seed, camera, DEFAULT_POINTING, sky), detector
        )
        for seed in (1, 2)
    ]
    stars = [find_stars(image, 20_000.0, 11) for image in images]
    assert len(stars[0]) == len(stars[1]) > 5
    distance = np.hypot(*(stars[0][:, None, :] - stars[1][None, :, :]).transpose(2, 0, 1))
    assert (distance.min(axis=1) < 0.2).all()


# ---- the camera follows its telescope ---------------------------------------------------


async def next_message(logs: EventStream, containing: str) -> list[str]:
    """The camera's log messages up to the first that contains ``containing``."""
    messages = [""]
    while containing not in messages[-1]:
        messages.append(str((await logs.next(5)).data.get("message", "")))
    return messages[1:]


async def test_camera_points_where_its_telescope_does_and_announces_its_ccds(
    tmp_path: Path,
) -> None:
    settings = Settings(prefix="sky", state_dir=tmp_path)
    telescope = CscAddress("Telescope", 2, "sky")
    async with make_csc(CameraCsc, MemoryBroker(), index=2, settings=settings) as h:
        camera = h.csc
        assert isinstance(camera, CameraCsc)
        sent = 0

        async def target(**data: object) -> None:
            """The telescope's retained target, as told (however wrong)."""
            nonlocal sent
            sent += 1
            body = {"object": "", "program": "", "rotatorAngle": 0.0} | data
            body |= {"seq": sent, "sent_tai": current_tai()}
            await h.bus.publish(telescope.event("target"), encode(body), qos=1, retain=True)

        hardware = await h.remote.next_event("focalPlaneSummaryInfo")
        assert hardware.retained
        assert hardware.parse(FOCAL_PLANE_SUMMARY_INFO).data == focal_plane_hardware(Camera.COMCAM)
        assert camera.pointing == DEFAULT_POINTING  # nothing heard yet

        async with h.remote.stream("logMessage") as logs:
            await target(ra=150.0, dec=-30.0, rotatorAngle=12.0, object="NGC3115")
            await next_message(logs, "pointing for the next exposures")
            assert camera.pointing == Pointing(150.0, -30.0, 12.0)

            await target(ra=10.0, dec=95.0)  # not on the sky
            await target(ra="10", dec=-20.0)  # not what a target is
            await target(ra=370.0, dec=-20.0, rotatorAngle=-5.0)  # RA beyond 360 is fine
            messages = await next_message(logs, "pointing for the next exposures")
            assert camera.pointing == Pointing(10.0, -20.0, -5.0)
        assert len(messages) == 3, messages
        assert "not on the sky" in messages[0]
        assert "malformed target" in messages[1]
