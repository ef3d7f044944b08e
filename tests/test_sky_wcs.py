"""The celestial WCS in an archived file puts the simulator's stars where they are.

Through the whole chain (telescope pointed and rotated, camera, header service,
archiver, in one process): the archived file is read as a pipeline would, the detector
assembled from its extensions' own keywords, the stars found in the pixels, and their
positions mapped through the WCS astropy reads from the primary header. They must land
on the simulator's catalog (a function of the sky and a seed, ``sim/daq/sky_catalog.py``)
within 2 pixels. Nothing of ``cscs/camera/sky.py`` is used here: the WCS is astropy's
reading of the file.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from cscs.camera.geometry import CCD_COLS, CCD_ROWS
from cscs.core.testing import MemoryBroker
from sim.daq.pixels import SkyModel
from sim.daq.sky_catalog import stars_near
from sim.testkit import observatory

CAMERA_DEFAULTS = Path(__file__).parents[1] / "sim" / "daq" / "config" / "_init.yaml"
FIELD = {"ra": 61.0, "dec": -75.0, "rotation": 33.0}  # circumpolar: up at any hour
TOLERANCE = 2.0  # pixels


def detector_image(path: Path) -> tuple[np.ndarray[Any, Any], fits.Header]:
    """Bias-subtracted imaging pixels on the detector, placed by each extension's
    DATASEC and DTV/DTM keywords; and the primary header."""
    image = np.zeros((CCD_ROWS, CCD_COLS))
    with fits.open(path) as hdus:
        for hdu in hdus[1:]:
            h = hdu.header
            x1, x2, y1, y2 = map(int, re.findall(r"\d+", h["DATASEC"]))
            b1, b2, c1, c2 = map(int, re.findall(r"\d+", h["BIASSEC"]))
            bias = np.median(hdu.data[c1 - 1 : c2, b1 + 4 : b2])  # past the CTI trail
            j, i = np.mgrid[y1 : y2 + 1, x1 : x2 + 1]
            x = np.rint(h["DTM1_1"] * i + h["DTV1"]).astype(int)
            y = np.rint(h["DTM2_2"] * j + h["DTV2"]).astype(int)
            image[y - 1, x - 1] = hdu.data[y1 - 1 : y2, x1 - 1 : x2] - bias
        return image, hdus[0].header.copy()


def primary_wcs(header: fits.Header) -> WCS:
    """The primary header's WCS. A header-only primary HDU (NAXIS = 0) with a 2-axis WCS
    is how raws are made (the real LATISS ones too); astropy notes it, rightly harmless."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def find_stars(image: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """1-based (x, y) centroids of unsaturated sources as wide as a star, well above the
    noise: local maxima over 40 sigma, centroided in a 9 x 9 box."""
    sky = np.median(image)
    noise = 1.4826 * np.median(np.abs(image - sky))
    peak = image - sky
    inner = peak[5:-5, 5:-5]
    is_max = inner > 40 * noise
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dx or dy:
                is_max &= inner >= peak[5 + dy : peak.shape[0] - 5 + dy,
                                        5 + dx : peak.shape[1] - 5 + dx]  # fmt: skip
    rows, cols = np.nonzero(is_max)
    found = []
    for r, c in zip(rows + 5, cols + 5, strict=True):
        box = peak[r - 4 : r + 5, c - 4 : c + 5]
        if box.max() > 1.5e5:  # near saturation: a flat top has no good centroid
            continue
        if (box > box.max() / 2).sum() < 8:  # sharper than the seeing: a cosmic ray
            continue
        weights = np.clip(box, 0, None)
        yy, xx = np.mgrid[-4:5, -4:5]
        found.append((c + (weights * xx).sum() / weights.sum() + 1,
                      r + (weights * yy).sum() / weights.sum() + 1))  # fmt: skip
    return np.array(found)


# Enough stars over 40 sigma in a 1 s exposure for the mean shift to resolve 0.2 pixel:
# ComCam's corner CCD has ~170 at the default density; LATISS, a tenth of the field at
# 0.1"/pixel, ~10, so its sky is made five times as crowded (the WCS is the same code).
@pytest.mark.parametrize(("index", "sensor", "star_density"),
                         [(1, "R00_S00", 40_000.0), (2, "R22_S00", 8000.0)],
                         ids=["LATISS", "ComCam-corner"])  # fmt: skip
async def test_stars_land_where_the_wcs_says(
    tmp_path: Path, index: int, sensor: str, star_density: float
) -> None:
    sky_settings = yaml.safe_load(CAMERA_DEFAULTS.read_text())["sky"] | {
        "star_density": star_density
    }
    async with (
        observatory(
            MemoryBroker(),
            f"wcs{index}",
            tmp_path,
            index=index,
            camera={"sensors": [sensor], "sky": sky_settings},
        ) as obs,  # fmt: skip
        obs.archiver.remote.stream("imageArchived") as archived,
    ):
        await obs.point(FIELD["ra"], FIELD["dec"], FIELD["rotation"])
        await obs.camera.remote.command(
            "takeImages", {"numImages": 1, "expTime": 1.0, "shutter": True,
                           "imageType": "OBJECT"}, timeout=60,
        )  # fmt: skip
        event = (await archived.next(60)).data
        assert event["headerComplete"], event
    path = next(obs.archive.rglob(f"*_{sensor}.fits"))
    image, header = detector_image(path)
    wcs = primary_wcs(header)
    sky = SkyModel(**sky_settings)
    centre = wcs.pixel_to_world((CCD_COLS + 1) / 2 - 1, (CCD_ROWS + 1) / 2 - 1)
    catalog = stars_near(centre.ra.deg, centre.dec.deg, 0.6, sky.star_counts, sky.catalog_seed)
    cx, cy = wcs.all_world2pix(catalog.ra, catalog.dec, 1)
    on = (cx > 10) & (cx < CCD_COLS - 10) & (cy > 10) & (cy < CCD_ROWS - 10)
    predicted = np.column_stack([cx[on], cy[on]])
    stars = find_stars(image)
    print("FOUND", len(stars))
    assert len(stars) >= 15, f"only {len(stars)} stars found"
    distance = np.hypot(*(stars[:, None, :] - predicted[None, :, :]).transpose(2, 0, 1))
    nearest = distance.min(axis=1)
    matched = nearest < TOLERANCE
    # Nearly every source is a catalog star (a cosmic ray or a blend may not be), and
    # those that are sit where the WCS says, far better than the 2 pixels asked for.
    assert matched.mean() >= 0.9, sorted(nearest)[-10:]
    assert np.median(nearest[matched]) < 0.5
    # No systematic shift either (a half-pixel slip in a convention would show here).
    closest = predicted[distance.argmin(axis=1)][matched]
    shift = (stars[matched] - closest).mean(axis=0)
    assert np.hypot(*shift) < 0.2, shift
    # The rotation is in the WCS: the same stars without it would not match.
    wrong = primary_wcs(header)
    wrong.wcs.cd = np.array([[-1.0, 0.0], [0.0, 1.0]]) * abs(np.linalg.det(wcs.wcs.cd)) ** 0.5
    wx, wy = wrong.all_world2pix(catalog.ra, catalog.dec, 1)
    unrotated = np.column_stack([wx, wy])
    near = np.hypot(*(stars[:, None, :] - unrotated[None, :, :]).transpose(2, 0, 1)).min(axis=1)
    assert (near < TOLERANCE).mean() < 0.5
