"""A star catalog on the whole sky that nobody has to store: every star is where a seeded
random generator puts it, so any pointing, any dither, any rerun sees the same stars.

The sphere is cut into fixed cells: declination bands :data:`BAND_HEIGHT` degrees high,
each band cut into a whole number of equal RA cells of about ``BAND_HEIGHT²`` square
degrees (the bands at the poles are a few wedges; nearer the equator, more cells). A
cell's stars are drawn by a generator seeded with the catalog seed and the cell's
(band, cell) numbers only: never by the pointing that asks, so two overlapping fields
get the very same stars where they overlap, to the last bit. Positions are uniform on
the sphere within the cell; the count is Poisson with the mean the cell's exact area
implies, so the density is right everywhere, poles included.

Magnitudes follow the number counts of a field away from the Galactic plane, roughly:
``N(<m) ∝ 10^(0.3 m)`` between the bright and the faint limit (many faint stars, few
bright ones). The configured density counts every star down to the faint limit. That
magnitude is the star's r; each star also has a colour g - r (main-sequence stars, about
-0.3 to 1.6) from which its magnitude in every band of the camera (u g r i z y) follows
by linear colour terms, roughly those of real stars: blue stars are brighter in u and g,
red ones in i, z and y.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cscs.camera.sky import within_radius

__all__ = [
    "BANDS",
    "BAND_HEIGHT",
    "StarCatalog",
    "StarCounts",
    "band_magnitudes",
    "cell_of",
    "cell_stars",
    "cells_near",
    "stars_near",
]

Array = npt.NDArray[np.float64]
BAND_HEIGHT = 0.5  # deg: a cell holds ~2000 stars at 8000 per square degree
_BANDS = round(180.0 / BAND_HEIGHT)
_SLOPE = 0.3  # d log10 N(<m) / dm
_CELLS_CACHED = 256  # ~12 MB at the default density; an LSSTCam field spans ~70 cells
_SQUARE_DEGREES_PER_STERADIAN = (180.0 / math.pi) ** 2
# m_band = r + offset + slope * (g - r): the bands of the camera, blue to red.
_COLOUR_TERMS = {
    "u": (0.25, 2.2),
    "g": (0.0, 1.0),
    "r": (0.0, 0.0),
    "i": (-0.05, -0.35),
    "z": (-0.08, -0.5),
    "y": (-0.1, -0.6),
}
BANDS = tuple(_COLOUR_TERMS)


@dataclass(frozen=True)
class StarCounts:
    """How many stars, and how bright: the parameters that shape the catalog."""

    density: float  # stars per square degree, bright_magnitude to faint_magnitude
    bright_magnitude: float
    faint_magnitude: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.density) and self.density >= 0):
            raise ValueError(f"star density must be finite and >= 0, not {self.density}")
        if not self.bright_magnitude < self.faint_magnitude:
            raise ValueError(
                f"bright_magnitude ({self.bright_magnitude}) must be less than "
                f"faint_magnitude ({self.faint_magnitude})"
            )


@dataclass(frozen=True)
class StarCatalog:
    """Stars as parallel arrays (read-only): RA and Dec in degrees (ICRS), magnitude
    (r) and colour (g - r)."""

    ra: Array
    dec: Array
    magnitude: Array
    colour: Array

    def __len__(self) -> int:
        return len(self.ra)

    def magnitudes(self, band: str) -> Array:
        """Each star's magnitude in ``band`` (one of :data:`BANDS`); ValueError otherwise."""
        return band_magnitudes(self.magnitude, self.colour, band)


def band_magnitudes(r: Array, colour: Array, band: str) -> Array:
    """Magnitudes in ``band`` of stars of r magnitude ``r`` and colour g - r ``colour``."""
    if band not in _COLOUR_TERMS:
        raise ValueError(f"no band {band!r} in the sky catalog; one of {', '.join(BANDS)}")
    offset, slope = _COLOUR_TERMS[band]
    return r + offset + slope * colour


def _band_edges(band: int) -> tuple[float, float]:
    low = -90.0 + band * BAND_HEIGHT
    return low, min(90.0, low + BAND_HEIGHT)


@functools.cache
def _cells_in_band(band: int) -> int:
    """A whole number of cells, each as near ``BAND_HEIGHT²`` in area as it can be."""
    low, high = _band_edges(band)
    area = 2 * math.pi * (math.sin(math.radians(high)) - math.sin(math.radians(low)))
    return max(1, round(area * _SQUARE_DEGREES_PER_STERADIAN / BAND_HEIGHT**2))


def cell_of(ra: float, dec: float) -> tuple[int, int]:
    """The (band, cell) that holds a position: how a star's home is named."""
    band = min(_BANDS - 1, max(0, math.floor((dec + 90.0) / BAND_HEIGHT)))
    cells = _cells_in_band(band)
    return band, math.floor((ra % 360.0) / (360.0 / cells)) % cells


def _readonly(values: Array) -> Array:
    values.flags.writeable = False
    return values


@functools.lru_cache(maxsize=_CELLS_CACHED)
def cell_stars(seed: int, counts: StarCounts, band: int, cell: int) -> StarCatalog:
    """One cell's stars: a function of the seed, the counts and the cell, nothing else."""
    rng = np.random.default_rng((seed, band, cell))
    low, high = _band_edges(band)
    sin_low, sin_high = math.sin(math.radians(low)), math.sin(math.radians(high))
    width = 360.0 / _cells_in_band(band)
    area = math.radians(width) * (sin_high - sin_low) * _SQUARE_DEGREES_PER_STERADIAN
    count = int(rng.poisson(counts.density * area))
    ra = (cell + rng.random(count)) * width
    dec = np.degrees(np.arcsin(np.clip(rng.uniform(sin_low, sin_high, count), -1.0, 1.0)))
    # Inverse of N(<m) ∝ 10^(0.3 m) on [bright, faint].
    bright = 10.0 ** (_SLOPE * counts.bright_magnitude)
    faint = 10.0 ** (_SLOPE * counts.faint_magnitude)
    magnitude = np.log10(bright + rng.random(count) * (faint - bright)) / _SLOPE
    # Drawn after the rest, so that adding colours moved no star.
    colour = np.clip(rng.normal(0.6, 0.35, count), -0.3, 1.6)
    return StarCatalog(*(_readonly(a) for a in (ra, dec, magnitude, colour)))


def cells_near(ra: float, dec: float, radius: float) -> list[tuple[int, int]]:
    """Every cell that may hold a star within ``radius`` of (ra, dec), all degrees: a
    superset, cut exactly afterwards."""
    low, high = dec - radius, dec + radius
    first = max(0, math.floor((low + 90.0) / BAND_HEIGHT))
    last = min(_BANDS - 1, math.floor((high + 90.0) / BAND_HEIGHT))
    # The RA half-width of a cap that does not hold a pole; holding one, it is all RA.
    cos_dec = math.cos(math.radians(dec))
    sin_radius = math.sin(math.radians(radius))
    holds_pole = low <= -90.0 or high >= 90.0 or sin_radius >= cos_dec
    half_width = 180.0 if holds_pole else math.degrees(math.asin(sin_radius / cos_dec)) + 1e-9
    cells: list[tuple[int, int]] = []
    for band in range(first, last + 1):
        n = _cells_in_band(band)
        width = 360.0 / n
        begin = math.floor((ra - half_width) / width)
        end = math.floor((ra + half_width) / width)
        indices = (
            range(n) if end - begin + 1 >= n else sorted({i % n for i in range(begin, end + 1)})
        )
        cells.extend((band, i) for i in indices)
    return cells


def stars_near(
    ra: float, dec: float, radius: float, counts: StarCounts, seed: int = 0
) -> StarCatalog:
    """Every star of the catalog ``seed`` within ``radius`` degrees of (ra, dec), in a
    fixed order (by cell, then as drawn). Across RA 0/360 and over the poles alike."""
    if not (math.isfinite(ra) and math.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise ValueError(f"no such place on the sky: RA {ra}, Dec {dec}")
    if not 0.0 <= radius <= 180.0:
        raise ValueError(f"radius must be 0-180 degrees, not {radius}")
    if seed < 0:
        raise ValueError(f"catalog seed must be >= 0, not {seed}")
    parts = [cell_stars(seed, counts, band, cell) for band, cell in cells_near(ra, dec, radius)]
    all_ra = np.concatenate([p.ra for p in parts])
    all_dec = np.concatenate([p.dec for p in parts])
    magnitude = np.concatenate([p.magnitude for p in parts])
    colour = np.concatenate([p.colour for p in parts])
    inside = within_radius(all_ra, all_dec, ra, dec, radius)
    return StarCatalog(*(_readonly(a[inside]) for a in (all_ra, all_dec, magnitude, colour)))
