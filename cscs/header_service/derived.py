"""Keywords computed rather than collected: times, identity, and where the telescope
pointed, from the camera's events and the collected RA/Dec, with astropy.

Times are TAI (``TIMESYS = 'TAI'``); ``AIRMASS`` is astropy's sec z at the middle of
the exposure; ``EL``/``AZ``/``HA`` ``START``/``END`` are for the start and end of the
exposure. Anything that cannot be computed is :class:`Missing`, with the reason.
"""

from __future__ import annotations

import numpy as np

from cscs.camera.events import EndOfImageTelemetry, StartIntegration
from cscs.camera.geometry import Camera
from cscs.camera.observatory import astropy_time, pointings
from cscs.header_service.collect import Missing, Value

__all__ = ["DERIVED_KEYWORDS", "derived_keywords"]

DERIVED_KEYWORDS = (
    "TELESCOP", "INSTRUME", "CAMCODE", "CONTRLLR", "DAYOBS", "SEQNUM", "OBSID", "IMGTYPE",
    "GROUPID", "TIMESYS", "EXPTIME", "DARKTIME", "SHUTTIME", "DATE-OBS", "MJD-OBS",
    "DATE-BEG", "MJD-BEG", "DATE-END", "MJD-END", "AIRMASS", "ELSTART", "ELEND", "AZSTART",
    "AZEND", "HASTART", "HAEND",
)  # fmt: skip

Keywords = list[tuple[str, Value | Missing]]


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
    ra: Value | Missing | None,
    dec: Value | Missing | None,
) -> Keywords:
    """The computed primary keywords, in the order they go in the header."""
    keywords: Keywords = [
        ("TELESCOP", Value(camera.telescope, "", "telescope")),
        ("INSTRUME", Value(camera.instrument, "", "instrument")),
        ("CAMCODE", Value(start.imageSource, "", "camera code")),
        ("CONTRLLR", Value(start.imageController, "", "image controller")),
        ("DAYOBS", Value(start.imageDate, "", "day of observation (TAI, noon to noon)")),
        ("SEQNUM", Value(start.imageNumber, "", "sequence number within the day")),
        ("OBSID", Value(start.imageName, "", "image name")),
        ("IMGTYPE", Value(start.imageType, "", "image type")),
        ("GROUPID", Value(start.groupId, "", "group of images")),
        ("TIMESYS", Value("TAI", "", "time scale of every time here")),
    ]
    if end is None:
        reason = Missing("no endOfImageTelemetry for this image")
        for name in ("EXPTIME", "DARKTIME", "SHUTTIME", "DATE-OBS", "MJD-OBS", "DATE-BEG",
                     "MJD-BEG", "DATE-END", "MJD-END"):  # fmt: skip
            keywords.append((name, reason))
        return keywords + _pointing_keywords(None, None, ra, dec)
    begin, finish = end.timestampDateObs, end.timestampDateEnd
    keywords += [
        ("EXPTIME", Value(end.exposureTime, "s", "requested exposure time")),
        ("DARKTIME", Value(end.darkTime, "s", "dark time")),
        ("SHUTTIME", Value(end.measuredShutterOpenTime, "s", "shutter open time")),
        *_time_keywords(begin, finish),
    ]
    return keywords + _pointing_keywords(begin, finish, ra, dec)


def _pointing_keywords(
    begin: float | None,
    finish: float | None,
    ra: Value | Missing | None,
    dec: Value | Missing | None,
) -> Keywords:
    names = ("AIRMASS", "ELSTART", "ELEND", "AZSTART", "AZEND", "HASTART", "HAEND")
    if begin is None or finish is None:
        return [(n, Missing("no exposure times")) for n in names]
    if not isinstance(ra, Value) or not isinstance(dec, Value):
        why = (
            ra.reason if isinstance(ra, Missing) else dec.reason if isinstance(dec, Missing) else ""
        )
        return [(n, Missing(f"no RA/Dec: {why or 'not in the keyword map'}")) for n in names]
    ra_deg, dec_deg = float(ra.value), float(dec.value)
    at_start, middle, at_end = pointings(ra_deg, dec_deg, [begin, (begin + finish) / 2, finish])
    airmass: Value | Missing = (
        Value(middle.airmass, "", "sec z at mid-exposure")
        if middle.alt > 0
        else Missing(f"target below the horizon (altitude {middle.alt:.1f} deg)")
    )
    return [
        ("AIRMASS", airmass),
        ("ELSTART", Value(at_start.alt, "deg", "altitude at start")),
        ("ELEND", Value(at_end.alt, "deg", "altitude at end")),
        ("AZSTART", Value(at_start.az, "deg", "azimuth at start (N through E)")),
        ("AZEND", Value(at_end.az, "deg", "azimuth at end (N through E)")),
        ("HASTART", Value(at_start.hour_angle, "h", "hour angle at start")),
        ("HAEND", Value(at_end.hour_angle, "h", "hour angle at end")),
    ]
