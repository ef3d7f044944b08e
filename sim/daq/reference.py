"""The simulated sky's catalog written out as the reference catalog ``image-qc`` measures
zero points against (``cscs.ocs_batch.refcat``'s format): the truth, star for star, in
every band, for the fields the camera has looked at.

One shard per catalog cell (:mod:`sim.daq.sky_catalog`), named by the catalog's seed and
star counts and the cell, written once: two fields that overlap share their cells'
shards, so no star is in two. A shard is written aside and renamed, so a reader never
sees half of one.
"""

from __future__ import annotations

import functools
import math
import zlib
from pathlib import Path

from cscs.camera.focal_plane import boresight_on_detector
from cscs.camera.geometry import CCD_COLS, CCD_ROWS, Camera
from cscs.ocs_batch.refcat import write_reference_shard
from sim.daq.sky_catalog import BANDS, StarCounts, cell_stars, cells_near

__all__ = ["field_radius", "write_field_shards"]


@functools.cache
def field_radius(camera: Camera) -> float:
    """Degrees from the optical axis to the farthest pixel of any of ``camera``'s
    detectors (no distortion is modelled, so pixels are as far as they look)."""
    farthest = 0.0
    for detector in camera.detectors:
        x, y = boresight_on_detector(camera, detector)
        for corner_x in (0.5, CCD_COLS + 0.5):
            for corner_y in (0.5, CCD_ROWS + 0.5):
                farthest = max(farthest, math.hypot(corner_x - x, corner_y - y))
    return farthest * camera.pixel_scale / 3600.0


def write_field_shards(
    directory: Path, ra: float, dec: float, radius: float, counts: StarCounts, seed: int
) -> int:
    """Write the shards of every cell within ``radius`` degrees of (ra, dec) that are
    not there yet; how many were written."""
    name = f"{seed}/{counts.density}/{counts.bright_magnitude}/{counts.faint_magnitude}"
    catalog = f"{zlib.crc32(name.encode()):08x}"
    others = sorted({p.name.split("-")[1] for p in directory.glob("sky-*-*-*.fits")} - {catalog})
    if others:  # two skies in one catalog would give each star twice, or two answers
        raise ValueError(
            f"{directory} holds shards of another simulated sky ({', '.join(others)}; this "
            f"one is {catalog}): empty it, or point reference_catalog elsewhere"
        )
    written = 0
    for band, cell in cells_near(ra, dec, radius):
        path = directory / f"sky-{catalog}-{band:03d}-{cell:05d}.fits"
        if path.exists():
            continue
        stars = cell_stars(seed, counts, band, cell)
        magnitudes = {b: stars.magnitudes(b) for b in BANDS}
        write_reference_shard(path, stars.ra, stars.dec, magnitudes)
        written += 1
    return written
