"""Where the telescopes are, and the sky as seen from there, computed with astropy.

The telescope simulator uses these to report Alt/Az for its RA/Dec, and the header
service to derive ``ELSTART``, ``AZSTART``, ``HASTART``, ``AIRMASS`` … from the pointing
it collected; tests check both against astropy called independently.

IERS tables: astropy is told never to download them (a night at the summit must not
depend on the internet); the tables bundled with ``astropy-iers-data`` are used, however
old. Their predictions of UT1 and polar motion stay within tens of milliseconds for
months (far finer than any header's arcseconds), so astropy's refusal of predictions
older than 30 days is turned off; beyond the table's end it warns and goes on with the
last values rather than stopping a night (docs/decisions/0019).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import AltAz, EarthLocation, SkyCoord, get_body
from astropy.time import Time
from astropy.utils import iers

__all__ = [
    "OBSERVATORY",
    "Pointing",
    "astropy_time",
    "local_sidereal_deg",
    "pointing",
    "pointings",
    "sun_altitude",
]

iers.conf.auto_download = False
iers.conf.auto_max_age = None
iers.conf.iers_degraded_accuracy = "warn"

# Cerro Pachón (both the Simonyi Survey Telescope and the Auxiliary Telescope).
OBSERVATORY = EarthLocation.from_geodetic(
    lon=-70.749417 * u.deg, lat=-30.244639 * u.deg, height=2663.0 * u.m
)


def astropy_time(tai: float | np.ndarray) -> Time:
    """A ``Time`` from Unix-epoch TAI seconds (the ``*_tai`` fields of the ICD)."""
    return Time(tai, format="unix_tai", scale="tai")


@dataclass(frozen=True)
class Pointing:
    """Where RA/Dec is in the sky at one moment."""

    alt: float  # deg
    az: float  # deg, north through east
    hour_angle: float  # hours, -12 … 12
    airmass: float  # sec z (astropy's), or NaN below the horizon


def pointings(
    ra: float | Sequence[float], dec: float | Sequence[float], tais: Sequence[float]
) -> list[Pointing]:
    """Where (``ra``, ``dec``) in degrees (ICRS) is at each TAI time: one vectorised
    astropy transform for all of them (a header needs three). ``ra`` and ``dec`` are
    one position for every time, or one per time (a mount that moved)."""
    when = astropy_time(np.asarray(tais, dtype=float))
    ras = np.broadcast_to(np.asarray(ra, dtype=float), when.shape)
    decs = np.broadcast_to(np.asarray(dec, dtype=float), when.shape)
    frame = AltAz(obstime=when, location=OBSERVATORY)
    horizontal = SkyCoord(ra=ras * u.deg, dec=decs * u.deg, frame="icrs").transform_to(frame)
    lst = when.sidereal_time("apparent", longitude=OBSERVATORY.lon).hour
    result = []
    for alt, az, secz, sidereal, right_ascension in zip(
        np.atleast_1d(horizontal.alt.deg),
        np.atleast_1d(horizontal.az.deg),
        np.atleast_1d(horizontal.secz),
        np.atleast_1d(lst),
        np.atleast_1d(ras),
        strict=True,
    ):
        hour_angle = float((sidereal - right_ascension / 15.0 + 12.0) % 24.0 - 12.0)
        airmass = float(secz) if alt > 0 else float("nan")
        result.append(Pointing(float(alt), float(az), hour_angle, airmass))
    return result


def pointing(ra: float, dec: float, tai: float) -> Pointing:
    """Alt/Az, hour angle and airmass of (``ra``, ``dec``) at one TAI time."""
    return pointings(ra, dec, [tai])[0]


def local_sidereal_deg(tai: float) -> float:
    """Apparent local sidereal time at the observatory, in degrees: the RA on the meridian."""
    return float(astropy_time(tai).sidereal_time("apparent", longitude=OBSERVATORY.lon).deg)


def sun_altitude(tai: float) -> float:
    """The Sun's altitude at the observatory, degrees: below -12 is the night's (nautical
    twilight over), as the observatory counts it."""
    when = astropy_time(tai)
    sun = get_body("sun", when, OBSERVATORY)
    return float(sun.transform_to(AltAz(obstime=when, location=OBSERVATORY)).alt.deg)
