"""Keywords computed rather than collected: identity, times, the site, and where the
telescope pointed, from the camera's events and the collected RA/Dec, with astropy.

Names, units and meanings are the real raws' (``docs/raw-format.md``). Times are TAI
(``TIMESYS = 'TAI'``); ``AMSTART``/``AMEND`` and ``EL``/``AZ``/``HA`` ``START``/``END``
are for the start and end of the exposure, from where the mount was then
(``RASTART``/``DECSTART``, ``RAEND``/``DECEND``; the target's ``RA``/``DEC`` if those
were not collected); ``AIRMASS`` is sec z at mid-exposure. Anything that cannot be
computed is :class:`Missing`, with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from cscs.camera.events import EndOfImageTelemetry, StartIntegration
from cscs.camera.geometry import Camera
from cscs.camera.observatory import OBSERVATORY, Pointing, astropy_time, pointings
from cscs.header_service.collect import Missing, Value, number_of

__all__ = ["DERIVED_KEYWORDS", "HEADER_SOURCES", "HEADER_VERSION", "derived_keywords"]

#: ``HEADVER``: the version of the real raws' header layout these files follow.
HEADER_VERSION = 2

DERIVED_KEYWORDS = (
    "TELESCOP", "INSTRUME", "CAMCODE", "CONTRLLR", "DAYOBS", "SEQNUM", "OBSID", "IMGTYPE",
    "GROUPID", "REASON", "CURINDEX", "MAXINDEX", "TIMESYS", "BUNIT", "BINX", "BINY", "HEADVER",
    "HDRSRC", "RADESYS",
    "OBS-LONG", "OBS-LAT", "OBS-ELEV", "OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z", "EXPTIME",
    "DARKTIME", "SHUTTIME", "DATE-OBS", "MJD-OBS", "DATE-BEG", "MJD-BEG", "DATE-END",
    "MJD-END", "AIRMASS", "AMSTART", "AMEND", "ELSTART", "ELEND", "AZSTART", "AZEND",
    "HASTART", "HAEND",
)  # fmt: skip

Keywords = list[tuple[str, Value | Missing]]
#: ``HDRSRC``: where the header's values came from, and its comment.
HEADER_SOURCES = {
    "live": "values heard on the bus during the exposure",
    "EFD": "rebuilt after the exposure from the EFD",
}
_TIMES = ("EXPTIME", "DARKTIME", "SHUTTIME", "DATE-OBS", "MJD-OBS", "DATE-BEG", "MJD-BEG",
          "DATE-END", "MJD-END")  # fmt: skip
_EARLIEST, _LATEST = 0.0, 7.3e9  # TAI Unix seconds: 1970 to about 2200
_POINTING = ("AIRMASS", "AMSTART", "AMEND", "ELSTART", "ELEND", "AZSTART", "AZEND",
             "HASTART", "HAEND")  # fmt: skip


def _site_keywords() -> Keywords:
    geodetic = OBSERVATORY.to_geodetic()
    x, y, z = (float(c.to_value("m")) for c in (OBSERVATORY.x, OBSERVATORY.y, OBSERVATORY.z))
    return [
        ("OBS-LONG", Value(round(float(geodetic.lon.deg), 7), "deg", "observatory east longitude")),
        ("OBS-LAT", Value(round(float(geodetic.lat.deg), 7), "deg", "observatory latitude")),
        (
            "OBS-ELEV",
            Value(round(float(geodetic.height.to_value("m")), 3), "m", "observatory elevation"),
        ),
        ("OBSGEO-X", Value(round(x, 2), "m", "observatory X, ITRS geocentric")),
        ("OBSGEO-Y", Value(round(y, 2), "m", "observatory Y, ITRS geocentric")),
        ("OBSGEO-Z", Value(round(z, 2), "m", "observatory Z, ITRS geocentric")),
    ]


def _reason(start: StartIntegration) -> Value:
    """``REASON``: the ``reason`` of ``takeImages``' ``keyValueMap``, as at the observatory;
    empty when none was given (a fact, not a value that could not be collected)."""
    keys, values = start.additionalKeys.split(":"), start.additionalValues.split(":")
    for key, value in zip(keys, values, strict=False):
        if key == "reason" and value:
            return Value(value, "", "reason for the exposure")
    return Value("", "", "takeImages gave no reason")


def _identity_keywords(camera: Camera, start: StartIntegration, origin: str) -> Keywords:
    return [
        ("TELESCOP", Value(camera.telescope, "", "telescope")),
        ("INSTRUME", Value(camera.header_instrument, "", "instrument")),
        ("CAMCODE", Value(start.imageSource, "", "camera code")),
        ("CONTRLLR", Value(start.imageController, "", "image controller")),
        ("DAYOBS", Value(start.imageDate, "", "day of observation (TAI, noon to noon)")),
        ("SEQNUM", Value(start.imageNumber, "", "sequence number within the day")),
        ("OBSID", Value(start.imageName, "", "image name")),
        ("IMGTYPE", Value(start.imageType, "", "image type")),
        ("GROUPID", Value(start.groupId, "", "group of images")),
        ("REASON", _reason(start)),
        ("CURINDEX", Value(start.imageIndex, "", "this image's number in its sequence")),
        ("MAXINDEX", Value(start.imagesInSequence, "", "images in the sequence")),
        ("TIMESYS", Value("TAI", "", "time scale of every time here")),
        ("BUNIT", Value("adu", "", "pixel values")),
        ("BINX", Value(1, "", "columns binned on the chip")),
        ("BINY", Value(1, "", "rows binned on the chip")),
        ("HEADVER", Value(HEADER_VERSION, "", "header layout version")),
        ("HDRSRC", Value(origin, "", HEADER_SOURCES[origin])),
        ("RADESYS", Value("ICRS", "", "celestial frame of RA/Dec")),
        *_site_keywords(),
    ]


def _time_keywords(begin: float, finish: float) -> Keywords:
    times = astropy_time(np.array([begin, finish]))
    isot, mjd = times.isot, times.mjd
    keywords: Keywords = []
    for suffix, position, what in (("OBS", 0, "start"), ("BEG", 0, "start"), ("END", 1, "end")):
        keywords += [
            (f"DATE-{suffix}", Value(str(isot[position]), "", f"{what} of exposure (TAI)")),
            (f"MJD-{suffix}", Value(float(mjd[position]), "d", f"{what} of exposure (TAI)")),
        ]
    return keywords


def derived_keywords(
    camera: Camera,
    start: StartIntegration,
    end: EndOfImageTelemetry | None,
    collected: Mapping[str, Value | Missing],
    origin: str = "live",
) -> Keywords:
    """The computed primary keywords, in the order they go in the header. ``collected``:
    what the keyword map gathered (``RA``, ``DEC``, ``RASTART`` … are used here);
    ``origin``: ``live`` or ``EFD`` (``HDRSRC``, :data:`HEADER_SOURCES`)."""
    keywords = _identity_keywords(camera, start, origin)
    if end is None:
        reason = Missing("no endOfImageTelemetry for this image")
        return keywords + [(n, reason) for n in _TIMES] + _pointing_keywords(None, None, collected)
    begin, finish = end.timestampDateObs, end.timestampDateEnd
    keywords += [
        ("EXPTIME", Value(end.exposureTime, "s", "requested exposure time")),
        ("DARKTIME", Value(end.darkTime, "s", "dark time")),
        ("SHUTTIME", Value(end.measuredShutterOpenTime, "s", "shutter open time")),
    ]
    if not all(math.isfinite(t) and _EARLIEST <= t <= _LATEST for t in (begin, finish)):
        # From the bus (or the EFD's record of it): a time astropy cannot take is a
        # value this header does not have, never an exposure lost to an exception.
        reason = Missing(f"endOfImageTelemetry times unusable: {begin!r} to {finish!r}"[:200])
        dates = [(n, reason) for n in _TIMES[3:]]
        return keywords + dates + _pointing_keywords(None, None, collected)
    keywords += _time_keywords(begin, finish)
    return keywords + _pointing_keywords(begin, finish, collected)


def _position(
    collected: Mapping[str, Value | Missing], ra_key: str, dec_key: str
) -> tuple[float, float] | str:
    """(RA, Dec) from two collected keywords, or why not."""
    ra, dec = number_of(collected.get(ra_key), ra_key), number_of(collected.get(dec_key), dec_key)
    if isinstance(ra, str) or isinstance(dec, str):
        return ra if isinstance(ra, str) else str(dec)
    if not -90.0 <= dec <= 90.0:  # from the bus: a sky position, or no position at all
        return f"{dec_key} {dec:g} is not a declination"
    return ra % 360.0, dec


def _pointing_keywords(
    begin: float | None, finish: float | None, collected: Mapping[str, Value | Missing]
) -> Keywords:
    if begin is None or finish is None:
        return [(n, Missing("no exposure times")) for n in _POINTING]
    target = _position(collected, "RA", "DEC")
    if isinstance(target, str):
        return [(n, Missing(f"no RA/Dec: {target}")) for n in _POINTING]
    first = _position(collected, "RASTART", "DECSTART")
    last = _position(collected, "RAEND", "DECEND")
    at_start = first if not isinstance(first, str) else target
    at_end = last if not isinstance(last, str) else target
    ras, decs = zip(at_start, target, at_end, strict=True)
    start, middle, stop = pointings(ras, decs, [begin, (begin + finish) / 2, finish])

    def airmass(where: Pointing, at: str) -> Value | Missing:
        if where.alt > 0:
            return Value(where.airmass, "", f"sec z at {at}")
        return Missing(f"target below the horizon at {at} (altitude {where.alt:.1f} deg)")

    return [
        ("AIRMASS", airmass(middle, "mid-exposure")),
        ("AMSTART", airmass(start, "start")),
        ("AMEND", airmass(stop, "end")),
        ("ELSTART", Value(start.alt, "deg", "altitude at start")),
        ("ELEND", Value(stop.alt, "deg", "altitude at end")),
        ("AZSTART", Value(start.az, "deg", "azimuth at start (N through E)")),
        ("AZEND", Value(stop.az, "deg", "azimuth at end (N through E)")),
        ("HASTART", Value(start.hour_angle, "h", "hour angle at start")),
        ("HAEND", Value(stop.hour_angle, "h", "hour angle at end")),
    ]
