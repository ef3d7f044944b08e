"""An image's ``exposure`` and ``ccdexposure`` rows, from its files' primary headers.

The columns and their units are the schema's (``lsst-sdm-schemas``); the keywords are
ours (docs/raw-format.md). Where the observatory's ConsDB takes a value through the
metadata translators (``obs_lsst``, not on PyPI), the same rule is applied here to the
one or two keywords it reads: the observation type lower-cased with ``object`` called
``science``, LATISS's physical filter joined with its grating, the tracking position
from where the mount was (``RASTART``/``DECSTART``) before the target's, none for a bias
or a flat. Times stay TAI, which is what both our headers and the schema say; nothing is
converted but what the schema asks (mid-exposure values, zenith distances).

Pure: values in, rows out; the values are made fit for their columns by
:mod:`cscs.consdb.values` when written. A value the header lacks is NULL, never
invented.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cscs.camera.data_ids import NO_SKY_POSITION, detector_id, exposure_id, physical_filter
from cscs.camera.geometry import Camera
from cscs.camera.naming import ImageName
from cscs.consdb.regions import detector_region, exposure_region
from cscs.consdb.values import finite, undefined

__all__ = [
    "ImageRows",
    "camera_of",
    "ccdexposure_id",
    "image_rows",
]

#: exposure column ← keyword, the value as the header has it (the units agree).
_AS_WRITTEN = {
    "band": "FILTBAND",
    "group_id": "GROUPID",
    "cur_index": "CURINDEX",
    "max_index": "MAXINDEX",
    "science_program": "PROGRAM",
    "target_name": "OBJECT",
}
#: exposure column ← numeric keyword (deg, s, degC, Pa, %, m/s, arcsec, mm, MJD TAI).
_NUMBERS = {
    "airmass": "AIRMASS",
    "sky_rotation": "ROTPA",
    "azimuth_start": "AZSTART",
    "azimuth_end": "AZEND",
    "altitude_start": "ELSTART",
    "altitude_end": "ELEND",
    "exp_time": "EXPTIME",
    "shut_time": "SHUTTIME",
    "dark_time": "DARKTIME",
    "air_temp": "AIRTEMP",
    "pressure": "PRESSURE",
    "humidity": "HUMIDITY",
    "wind_speed": "WINDSPD",
    "wind_dir": "WINDDIR",
    "dimm_seeing": "SEEING",
    "focus_z": "FOCUSZ",
    "dome_azimuth": "DOMEAZ",
    "obs_start_mjd": "MJD-BEG",
    "obs_end_mjd": "MJD-END",
}
_SEES_SKY = {"science", "acq", "focus", "cwfs", "stuttered"}
_SEES_NO_SKY = {"bias", "dark", "flat"}


@dataclass(frozen=True)
class ImageRows:
    """One image's rows, values not yet fitted to their columns."""

    exposure: dict[str, object]
    ccdexposures: list[dict[str, object]]
    warnings: list[str] = field(default_factory=list)


def camera_of(instrument: str) -> Camera:
    for camera in Camera:
        if camera.instrument == instrument:
            return camera
    raise ValueError(f"unknown instrument {instrument[:40]!r}")


def ccdexposure_id(exposure: int, detector: int) -> int:
    """obs_lsst's detector-exposure id: ``exposure_id * 1000 + detector``."""
    return exposure * 1000 + detector


def image_rows(instrument: str, headers: Mapping[str, Mapping[str, Any]]) -> ImageRows:
    """The image's rows from ``headers`` (sensor → its file's primary header).
    ValueError naming the cause when the image itself cannot be told: an unknown
    instrument or sensor, no headers, an ``OBSID`` missing, malformed, of another
    camera, or not the same in every file."""
    camera = camera_of(instrument)
    if not headers:
        raise ValueError("no headers: an image has at least one file")
    sensors = sorted(headers)
    detectors = {sensor: camera.detector(str(sensor)) for sensor in sensors}
    image = _image_name(camera, headers)
    warnings: list[str] = []
    where = str(image)
    header = _merged(headers, sensors)
    exposure = _exposure(camera, image, header, where, warnings)
    on_sky = exposure["img_type"] == "science"  # the observatory's rule for s_region
    exposure["s_region"] = exposure_region([headers[s] for s in sensors]) if on_sky else None
    ccds: list[dict[str, object]] = []
    for sensor in sensors:
        number = detector_id(instrument, detectors[sensor].name)
        ccds.append({
            "ccdexposure_id": ccdexposure_id(exposure["exposure_id"], number),  # type: ignore[arg-type]
            "exposure_id": exposure["exposure_id"],
            "day_obs": exposure["day_obs"],
            "seq_num": exposure["seq_num"],
            "detector": number,
            "s_region": detector_region(headers[sensor]) if on_sky else None,
        })  # fmt: skip
    return ImageRows(exposure, ccds, warnings)


def _image_name(camera: Camera, headers: Mapping[str, Mapping[str, Any]]) -> ImageName:
    names = {_shown(header.get("OBSID")) for header in headers.values()}
    if len(names) != 1:
        raise ValueError(f"the files disagree on OBSID: {', '.join(sorted(names)[:4])}")
    obsid = next(iter(headers.values())).get("OBSID")
    if not isinstance(obsid, str):
        raise ValueError(f"OBSID {names.pop()} is not an image name")
    image = ImageName.parse(obsid)
    if image.code != camera.code:
        raise ValueError(f"{image} is not a {camera.instrument} image")
    exposure_id(str(image))  # a sequence number out of range is refused here
    return image


def _merged(headers: Mapping[str, Mapping[str, Any]], sensors: list[str]) -> dict[str, Any]:
    """The observation's keywords: each the first defined one in sensor order (a file
    whose header lacks a value does not hide another file's)."""
    merged: dict[str, Any] = {}
    for sensor in sensors:
        for key, value in headers[sensor].items():
            if merged.get(key) is None and not undefined(value):
                merged[key] = value
    return merged


def _exposure(
    camera: Camera, image: ImageName, header: Mapping[str, Any], where: str, warnings: list[str]
) -> dict[str, object]:
    numbers = {column: _number(header, key, where, warnings) for column, key in _NUMBERS.items()}
    img_type = _lower(header.get("IMGTYPE"))
    if img_type == "object":
        img_type = "science"
    start, end = (_time(header.get(key), key, where, warnings) for key in ("DATE-BEG", "DATE-END"))
    mjd_start, mjd_end = numbers["obs_start_mjd"], numbers["obs_end_mjd"]
    altitude, azimuth = _mid_altaz(numbers)
    ra, dec = _tracking(header, img_type, where, warnings)
    values: dict[str, object] = {
        "exposure_id": exposure_id(str(image)),
        "exposure_name": str(image),
        "controller": image.controller,
        "day_obs": int(image.day_obs),
        "seq_num": image.seq_num,
        **{column: header.get(key) for column, key in _AS_WRITTEN.items()},
        **numbers,
        "physical_filter": physical_filter(
            camera.instrument, header.get("FILTER"), header.get("GRATING")
        ),
        "s_ra": ra,
        "s_dec": dec,
        "altitude": altitude,
        "azimuth": azimuth,
        "zenith_distance_start": _zenith(numbers["altitude_start"]),
        "zenith_distance_end": _zenith(numbers["altitude_end"]),
        "zenith_distance": _zenith(altitude),
        "obs_start": start,
        "obs_end": end,
        "exp_midpt": start + (end - start) / 2 if start is not None and end is not None else None,
        "exp_midpt_mjd": _mean(mjd_start, mjd_end),
        "img_type": img_type,
        "observation_reason": _lower(header.get("REASON")) or None,
        "can_see_sky": _can_see_sky(img_type, numbers["shut_time"]),
    }
    _check_agrees(image, header, where, warnings)
    return values


def _number(header: Mapping[str, Any], key: str, where: str, warnings: list[str]) -> float | None:
    value = header.get(key)
    if undefined(value):
        return None
    number = finite(value)
    if number is None:
        warnings.append(f"{where}: {key} = {_shown(value)} is not a finite number: NULL")
    return number


def _shown(value: object) -> str:
    """A value as a warning shows it: its first 40 characters (an integer of a million
    digits is not turned into text whole)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    return repr(str(value)[:40])


def _time(value: object, key: str, where: str, warnings: list[str]) -> datetime.datetime | None:
    """A header time (ISO 8601, TAI, no zone) as the schema's TAI timestamp."""
    if undefined(value):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(str(value)[:40])
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is not None:
        warnings.append(f"{where}: {key} = {_shown(value)} is not a TAI time: NULL")
        return None
    return parsed


def _lower(value: object) -> str | None:
    return value.strip().lower() if isinstance(value, str) else None


def _tracking(
    header: Mapping[str, Any], img_type: str | None, where: str, warnings: list[str]
) -> tuple[float | None, float | None]:
    if img_type in NO_SKY_POSITION:
        return None, None
    for ra_key, dec_key in (("RASTART", "DECSTART"), ("RA", "DEC")):
        ra, dec = (_number(header, key, where, warnings) for key in (ra_key, dec_key))
        if ra is not None and dec is not None:
            return ra, dec
    return None, None


def _mid_altaz(numbers: Mapping[str, float | None]) -> tuple[float | None, float | None]:
    """Mid-exposure altitude and azimuth: the direction halfway between where the mount
    was at the start and at the end (through north, the azimuth wraps correctly)."""
    ends = [numbers[k] for k in ("altitude_start", "azimuth_start", "altitude_end", "azimuth_end")]
    if any(value is None for value in ends):
        return None, None
    alt1, az1, alt2, az2 = (math.radians(value) for value in ends)  # type: ignore[arg-type]
    x = math.cos(alt1) * math.cos(az1) + math.cos(alt2) * math.cos(az2)
    y = math.cos(alt1) * math.sin(az1) + math.cos(alt2) * math.sin(az2)
    z = math.sin(alt1) + math.sin(alt2)
    if math.hypot(x, y, z) == 0.0:
        return None, None
    return math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x)) % 360.0


def _mean(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else (first + second) / 2


def _zenith(altitude: float | None) -> float | None:
    return None if altitude is None else 90.0 - altitude


def _can_see_sky(img_type: str | None, shut_time: float | None) -> bool | None:
    """The translators' rule from what our headers have: no shutter time, no sky; then by
    the observation type; unknown otherwise (an engineering test)."""
    if shut_time == 0.0:
        return False
    if img_type in _SEES_SKY:
        return True
    if img_type in _SEES_NO_SKY:
        return False
    return None


def _check_agrees(
    image: ImageName, header: Mapping[str, Any], where: str, warnings: list[str]
) -> None:
    """The image name is the exposure's identity; a DAYOBS or SEQNUM that says otherwise
    is reported, not followed."""
    for key, expected in (("DAYOBS", image.day_obs), ("SEQNUM", image.seq_num)):
        value = header.get(key)
        if not undefined(value) and _shown(value) != _shown(expected):
            warnings.append(f"{where}: {key} = {_shown(value)} disagrees with OBSID: ignored")
