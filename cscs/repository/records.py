"""A raw file's dimension records, from its own primary header: what the observatory's
ingest (``obs_base``'s ``RawIngestTask`` with ``obs_lsst``'s translators) would make of
it, for this project's raw conventions (``docs/raw-format.md``). Pure: the header comes
in as a mapping (an undefined FITS value is None), the records go out as plain values
for the Butler; nothing is read or written here.

What is taken from where (the translators' own choices, where they have one):

* instrument: ``INSTRUME`` as the cameras write it (``LATISS``, ``ComCam``,
  ``lsstCam``) or DM's name (a file archived without its header carries that);
* detector: ``RAFTBAY`` + ``CCDSLOT``, numbered as ``obs_lsst`` does (:mod:`.ids`);
* exposure: the number from ``OBSID`` (``DAYOBS``/``SEQNUM``, when present, must agree);
  ``IMGTYPE`` lower-cased (``bias``), ``REASON``, ``OBJECT``, ``PROGRAM``, ``EXPTIME``,
  ``DARKTIME``; tracking RA/Dec from ``RASTART``/``DECSTART`` (else the target's
  ``RA``/``DEC``); azimuth ``AZSTART`` and zenith angle ``90 - ELSTART`` at the start;
  sky angle ``ROTPA`` when ``ROTCOORD`` is ``sky``; ``seq_start``/``seq_end`` from
  ``CURINDEX``/``MAXINDEX``; the timespan ``DATE-BEG`` … ``DATE-END`` (TAI), an end
  before the start clamped to the start;
* physical_filter: as the translators name it (``cscs.camera.data_ids.physical_filter``:
  ``FILTER``, for LATISS ``FILTER~GRATING``, e.g. ``SDSSr_65mm~empty``, the name
  ConsDB holds too) with its band ``FILTBAND``; ``unknown`` for both when the header
  has none, as ``obs_lsst`` does;
* group: ``GROUPID``, else the image name; day_obs: the image name's day, its timespan
  the TAI day from noon to noon (``Timespan.from_day_obs(day, 12 h)``).

A keyword missing or undefined gives None where the schema allows it (a file archived
before its header came has almost nothing); a value of the wrong type or a name that
does not fit is a :class:`BadHeaderError` naming the keyword.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import astropy.time
from lsst.daf.butler import Timespan

from cscs.camera.data_ids import (
    NO_SKY_POSITION,
    detector_id,
    detector_ids,
    detector_purpose,
    exposure_id,
    physical_filter,
)
from cscs.camera.naming import ImageName

__all__ = [
    "DAY_OBS_OFFSET",
    "INSTRUMENT_CLASS",
    "BadHeaderError",
    "RawRecords",
    "detector_records",
    "instrument_of",
    "instrument_record",
    "raw_records",
]

DAY_OBS_OFFSET = 12 * 3600  # s after TAI midnight: the observing day rolls over at noon
#: ``instrument.class_name``: what wrote the records (``obs_lsst``'s classes are not here).
INSTRUMENT_CLASS = "cscs.repository.Repository"
_HEADER_INSTRUMENTS = {"LATISS": "LATISS", "ComCam": "LSSTComCam", "lsstCam": "LSSTCam",
                       "LSSTComCam": "LSSTComCam", "LSSTCam": "LSSTCam"}  # fmt: skip
_CODES = {"LATISS": "AT", "LSSTComCam": "CC", "LSSTCam": "MC"}
_SKY_TYPES = {"science", "object", "acq", "focus", "cwfs", "stuttered"}
_DARK_TYPES = {"bias", "dark", "flat"}
UNKNOWN_FILTER = "unknown"
_EXPOSURE_MAX = 10**13  # day_obs (8 digits, year shifted by controller) * 1e5 + seq_num


class BadHeaderError(ValueError):
    """The header cannot describe the file: the message names the keyword and why."""


@dataclass(frozen=True)
class RawRecords:
    """What one raw file adds to the registry: each element's record values, and the
    file's data ID."""

    instrument: str
    image_name: str
    sensor: str
    exposure_id: int
    detector: int
    physical_filter: dict[str, Any]
    day_obs: dict[str, Any]
    group: dict[str, Any]
    exposure: dict[str, Any]

    @property
    def data_id(self) -> dict[str, Any]:
        return {"instrument": self.instrument, "exposure": self.exposure_id,
                "detector": self.detector}  # fmt: skip


def instrument_of(header: Mapping[str, Any]) -> str:
    """DM's name of the file's instrument; BadHeaderError if ``INSTRUME`` names none."""
    value = header.get("INSTRUME")
    instrument = _HEADER_INSTRUMENTS.get(value) if isinstance(value, str) else None
    if instrument is None:
        raise BadHeaderError(f"INSTRUME {_shown(value)} is not a camera of ours")
    return instrument


def instrument_record(instrument: str) -> dict[str, Any]:
    detectors = detector_ids(instrument)
    return {"name": instrument, "detector_max": max(detectors.values()) + 1,
            "exposure_max": _EXPOSURE_MAX, "visit_max": _EXPOSURE_MAX,
            "visit_system": 0, "class_name": INSTRUMENT_CLASS}  # fmt: skip


def detector_records(instrument: str) -> list[dict[str, Any]]:
    """Every detector ``obs_lsst`` numbers for ``instrument``."""
    return [
        {"instrument": instrument, "id": number, "full_name": name,
         "raft": name[:3], "name_in_raft": name[4:], "purpose": detector_purpose(name)}
        for name, number in detector_ids(instrument).items()
    ]  # fmt: skip


def raw_records(header: Mapping[str, Any]) -> RawRecords:
    """The records of the file whose primary header is ``header``; BadHeaderError
    naming the keyword that makes it impossible."""
    instrument = instrument_of(header)
    image = _text(header, "OBSID", 64)
    if image is None:
        raise BadHeaderError("OBSID (the image name) is missing")
    try:
        name = ImageName.parse(image)
        number = exposure_id(image)
    except ValueError as exc:
        raise BadHeaderError(f"OBSID: {exc}") from None
    if name.code != _CODES[instrument]:
        raise BadHeaderError(f"OBSID {image} is not a {instrument} image ({_CODES[instrument]}_…)")
    _agrees(header, "DAYOBS", name.day_obs, image)
    _agrees(header, "SEQNUM", name.seq_num, image)
    sensor = f"{_text(header, 'RAFTBAY', 8)}_{_text(header, 'CCDSLOT', 8)}"
    try:
        detector = detector_id(instrument, sensor)
    except ValueError as exc:
        raise BadHeaderError(f"RAFTBAY/CCDSLOT: {exc}") from None
    day = int(name.day_obs)
    named = physical_filter(instrument, _text(header, "FILTER", 32), header.get("GRATING"))
    physical_filter_name = named[:64] if named else UNKNOWN_FILTER
    band = _text(header, "FILTBAND", 32) or UNKNOWN_FILTER
    group = _text(header, "GROUPID", 64) or image
    kind = _text(header, "IMGTYPE", 16)
    kind = kind.lower() if kind else None
    exposure = {
        "instrument": instrument, "id": number, "obs_id": image,
        "physical_filter": physical_filter_name, "group": group, "day_obs": day,
        "seq_num": name.seq_num, **_sequence(header, name.seq_num),
        "exposure_time": _number(header, "EXPTIME"), "dark_time": _number(header, "DARKTIME"),
        "observation_type": kind, "observation_reason": _text(header, "REASON", 68) or None,
        "target_name": _text(header, "OBJECT", 64, cut=True) or None,
        "science_program": _text(header, "PROGRAM", 64, cut=True) or None,
        **_pointing(header, kind),
        "has_simulated": any(header[k] is True for k in header if k.startswith("SIMULATE")),
        "can_see_sky": True if kind in _SKY_TYPES else False if kind in _DARK_TYPES else None,
        "timespan": _timespan(header),
    }  # fmt: skip
    return RawRecords(
        instrument, image, sensor, number, detector,
        physical_filter={"instrument": instrument, "name": physical_filter_name, "band": band},
        day_obs={"instrument": instrument, "id": day, "timespan": _day_timespan(day)},
        group={"instrument": instrument, "name": group},
        exposure=exposure,
    )  # fmt: skip


def _shown(value: Any) -> str:
    return repr(value)[:40]


def _agrees(header: Mapping[str, Any], keyword: str, expected: str | int, image: str) -> None:
    value = header.get(keyword)
    if value is not None and str(value) != str(expected):
        raise BadHeaderError(f"{keyword} {_shown(value)} disagrees with OBSID {image}")


def _text(header: Mapping[str, Any], keyword: str, length: int, *, cut: bool = False) -> str | None:
    """A string keyword; longer than the registry's column is refused, or ``cut`` (free
    text such as a target's name, where the start is what matters)."""
    value = header.get(keyword)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadHeaderError(f"{keyword} {_shown(value)} is not text")
    value = value.strip()
    if len(value) > length:
        if not cut:
            raise BadHeaderError(f"{keyword} {_shown(value)} is longer than {length} characters")
        value = value[:length]
    return value


def _number(header: Mapping[str, Any], keyword: str) -> float | None:
    value = header.get(keyword)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadHeaderError(f"{keyword} {_shown(value)} is not a finite number")
    return float(value)


def _sequence(header: Mapping[str, Any], seq_num: int) -> dict[str, int]:
    """The first and last sequence numbers of the image's ``takeImages`` sequence."""
    index, count = _number(header, "CURINDEX"), _number(header, "MAXINDEX")
    if index is None or count is None or not 1 <= index <= count:
        return {"seq_start": seq_num, "seq_end": seq_num}
    start = max(seq_num - int(index) + 1, 0)
    return {"seq_start": start, "seq_end": start + int(count) - 1}


def _pointing(header: Mapping[str, Any], kind: str | None) -> dict[str, float | None]:
    """Where the telescope pointed; no tracking position for a bias or a flat (the
    translators' rule, which ConsDB follows too)."""
    ra, dec = _number(header, "RASTART"), _number(header, "DECSTART")
    if ra is None or dec is None:
        ra, dec = _number(header, "RA"), _number(header, "DEC")
    if kind in NO_SKY_POSITION:
        ra = dec = None
    elevation = _number(header, "ELSTART")
    on_sky = _text(header, "ROTCOORD", 16)
    return {
        "tracking_ra": ra if dec is not None else None,
        "tracking_dec": dec if ra is not None else None,
        "azimuth": _number(header, "AZSTART"),
        "zenith_angle": None if elevation is None else 90.0 - elevation,
        "sky_angle": _number(header, "ROTPA") if on_sky == "sky" else None,
    }


@functools.lru_cache(maxsize=64)
def _day_timespan(day: int) -> Timespan:
    """Cached, as :func:`_span` is: the files of one image share it, and making a
    Timespan from astropy times costs ~5 ms."""
    return Timespan.from_day_obs(day, DAY_OBS_OFFSET)


def _time(header: Mapping[str, Any], keyword: str) -> str | None:
    """The ISO time text of ``keyword`` (checked when the timespan is made)."""
    return _text(header, keyword, 32) or None


def _timespan(header: Mapping[str, Any]) -> Timespan | None:
    """``DATE-BEG`` (else ``DATE-OBS``) to ``DATE-END``; an end missing or before the
    start is the start (the observatory's ingest clamps it too)."""
    begin = _time(header, "DATE-BEG")
    begin_keyword = "DATE-BEG" if begin else "DATE-OBS"
    begin = begin or _time(header, "DATE-OBS")
    if begin is None:
        return None
    return _span(begin_keyword, begin, _time(header, "DATE-END"))


@functools.lru_cache(maxsize=1024)
def _span(begin_keyword: str, begin: str, end: str | None) -> Timespan:
    start = _parsed(begin_keyword, begin)
    stop = start if end is None else _parsed("DATE-END", end)
    return Timespan(start, start if stop < start else stop)


def _parsed(keyword: str, value: str) -> astropy.time.Time:
    try:
        return astropy.time.Time(value, format="isot", scale="tai")
    except ValueError:
        raise BadHeaderError(f"{keyword} {_shown(value)} is not an ISO time") from None
