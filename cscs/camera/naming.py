"""Image names and the day of observation (ICD §5).

``{CC}_{C}_{YYYYMMDD}_{NNNNNN}``: camera code, controller, day of observation, and a
sequence number that restarts at 1 each day. The day of observation is the TAI date 12
hours before the exposure starts, so a whole night keeps one date.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

__all__ = ["ImageName", "day_obs"]

_DAY_OFFSET = 12 * 3600.0
# ICD §5 (1.1): what a consumer accepts. ASCII digits only, and the whole string.
_PATTERN = re.compile(r"(AT|CC|MC)_([A-Z])_([0-9]{8})_([0-9]{6})")


def day_obs(tai: float) -> str:
    """``YYYYMMDD``: the TAI date 12 hours before ``tai`` (Unix-epoch TAI seconds)."""
    return time.strftime("%Y%m%d", time.gmtime(tai - _DAY_OFFSET))


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
            raise ValueError(f"not an image name (e.g. AT_O_20261121_000042): {text!r}")
        code, controller, day, seq = match.groups()
        return cls(code, controller, day, int(seq))
