"""Image names, days of observation and sensor names (ICD §5), and their checks.

Names come off the bus and go into paths and queries, so every consumer checks them
where it parses a message (ICD 1.1 "Names are checked"): the ``…Text`` types below are
what the payload models declare, so a message with a name that does not match never
reaches a handler.

``{CC}_{C}_{YYYYMMDD}_{NNNNNN}``: camera code, controller, day of observation, and a
sequence number that restarts at 1 each day. The day of observation is the TAI date 12
hours before the exposure starts, so a whole night keeps one date.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

__all__ = [
    "MAX_SENSORS",
    "DayObsText",
    "ImageName",
    "ImageNameText",
    "SensorListText",
    "SensorText",
    "check_day_obs",
    "check_image_name",
    "check_sensor",
    "check_sensor_list",
    "day_obs",
    "taken_by",
]

_DAY_OFFSET = 12 * 3600.0
# ICD §5 (1.1): what a consumer accepts. ASCII digits only, and the whole string.
_PATTERN = re.compile(r"(AT|CC|MC)_([A-Z])_([0-9]{8})_([0-9]{6})")
_DAY_OBS = re.compile(r"[0-9]{8}")
_SENSOR = re.compile(r"R[0-9]{2}_S([0-9]{2}|[GW][0-9])")  # corner guider/wavefront too
#: The most sensors any camera has (LSSTCam: 189 science, 8 guider, 8 wavefront): a
#: list longer than this is refused before anything is done per sensor.
MAX_SENSORS = 205


def day_obs(tai: float) -> str:
    """``YYYYMMDD``: the TAI date 12 hours before ``tai`` (Unix-epoch TAI seconds)."""
    return time.strftime("%Y%m%d", time.gmtime(tai - _DAY_OFFSET))


def taken_by(image: str, tai: float) -> bool:
    """Whether ``image`` can have been taken by ``tai``: its day of observation is not
    after the one that starts within a day of ``tai`` (a day's grace for clocks and
    time zones). A name of a day to come is a forgery or a broken clock: taken at its
    word, it would hold an alarm until that day, or raise one for a night not yet begun.
    ValueError if ``image`` is not an image name."""
    return ImageName.parse(image).day_obs <= day_obs(tai + 86400.0)


@dataclass(frozen=True, order=True)
class ImageName:
    code: str  # AT, CC, MC
    controller: str  # O (OCS)
    day_obs: str  # YYYYMMDD
    seq_num: int

    def __post_init__(self) -> None:
        if not 0 <= self.seq_num <= 999_999:
            raise ValueError(f"sequence number {self.seq_num} is outside 0-999999")

    def __str__(self) -> str:
        return f"{self.code}_{self.controller}_{self.day_obs}_{self.seq_num:06d}"

    @classmethod
    def parse(cls, text: str) -> ImageName:
        match = _PATTERN.fullmatch(text)
        if match is None:
            raise ValueError(f"not an image name (e.g. AT_O_20261121_000042): {text[:40]!r}")
        code, controller, day, seq = match.groups()
        return cls(code, controller, day, int(seq))


def check_image_name(text: str) -> str:
    """``text`` if it is an image name (ICD §5); ValueError saying why not."""
    ImageName.parse(text)
    return text


def check_day_obs(text: str) -> str:
    if not _DAY_OBS.fullmatch(text):
        raise ValueError(f"not a day of observation (YYYYMMDD): {text[:40]!r}")
    return text


def check_sensor(text: str) -> str:
    if not _SENSOR.fullmatch(text):
        raise ValueError(f"not a sensor name (e.g. R22_S11): {text[:40]!r}")
    return text


def check_sensor_list(text: str) -> str:
    """A comma-separated list of at most :data:`MAX_SENSORS` sensor names, each once."""
    names = [s for s in text.split(",", MAX_SENSORS + 1) if s]
    if len(names) > MAX_SENSORS:
        raise ValueError(f"more than {MAX_SENSORS} sensors listed")
    for name in names:
        check_sensor(name)
    if len(set(names)) != len(names):
        raise ValueError("a sensor is listed twice")
    return text


ImageNameText = Annotated[str, AfterValidator(check_image_name)]
DayObsText = Annotated[str, AfterValidator(check_day_obs)]
SensorText = Annotated[str, AfterValidator(check_sensor)]
SensorListText = Annotated[str, AfterValidator(check_sensor_list)]
