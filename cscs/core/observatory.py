"""Where the telescopes are, and the sky as seen from there, computed with astropy.

The telescope simulator uses these to report Alt/Az for its RA/Dec, and the header
service to derive ``ELSTART``, ``AZSTART``, ``HASTART``, ``AIRMASS`` … from the pointing
it collected; tests check both against astropy called independently.

IERS tables: astropy is told never to download them (a night at the summit must not
depend on the internet); the tables bundled with ``astropy-iers-data`` are used, which
is far more precise than anything a header needs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import astropy.units as u
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import iers

__all__ = ["OBSERVATORY", "Pointing", "astropy_time", "pointing"]

iers.conf.auto_download = False

# Cerro Pachón (both the Simonyi Survey Telescope and the Auxiliary Telescope).
OBSERVATORY = EarthLocation.from_geodetic(
    lon=-70.749417 * u.deg, lat=-30.244639 * u.deg, height=2663.0 * u.m
)


def astropy_time(tai: float) -> Time:
    """A ``Time`` from Unix-epoch TAI seconds (the ``*_tai`` fields of the ICD)."""
    return Time(tai, format="unix_tai", scale="tai")


@dataclass(frozen=True)
class Pointing:
    """Where RA/Dec is in the sky at one moment."""

    alt: float  # deg
    az: float  # deg, north through east
    hour_angle: float  # hours, -12 … 12
    airmass: float  # sec z (astropy's), or NaN below the horizon


@functools.lru_cache(maxsize=256)
def pointing(ra: float, dec: float, tai: float) -> Pointing:
    """Alt/Az, hour angle and airmass of (``ra``, ``dec``) in degrees (ICRS) at ``tai``."""
    when = astropy_time(tai)
    frame = AltAz(obstime=when, location=OBSERVATORY)
    horizontal = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs").transform_to(frame)
    alt = float(horizontal.alt.deg)
    lst = when.sidereal_time("apparent", longitude=OBSERVATORY.lon).hour
    hour_angle = float((lst - ra / 15.0 + 12.0) % 24.0 - 12.0)
    airmass = float(horizontal.secz) if alt > 0 else float("nan")
    return Pointing(alt, float(horizontal.az.deg), hour_angle, airmass)
