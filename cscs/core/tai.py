"""TAI time as Unix-epoch seconds, the time scale of every ``*_tai`` field (ICD §1).

The offset TAI - UTC changes only at leap seconds, so it is looked up once per UTC day
with ERFA (the library astropy itself uses) rather than through a full astropy ``Time``
on every message.
"""

from __future__ import annotations

import functools
import time
import warnings

import erfa

__all__ = ["current_tai", "tai_isot", "tai_minus_utc", "tai_mjd"]

_SECONDS_PER_DAY = 86400
_UNIX_EPOCH_MJD = 40587  # 1970-01-01


@functools.lru_cache(maxsize=16)
def _tai_minus_utc_on_day(unix_day: int) -> float:
    year, month, day = time.gmtime(unix_day * _SECONDS_PER_DAY)[:3]
    with warnings.catch_warnings():
        # ERFA warns that dates past its leap-second table's horizon are "dubious";
        # the last known offset is still the right answer until a new leap second.
        warnings.simplefilter("ignore", erfa.ErfaWarning)
        return float(erfa.dat(year, month, day, 0.0))


def tai_minus_utc(unix_utc: float) -> float:
    """TAI - UTC in seconds at the given UTC Unix time (37 s since 2017)."""
    return _tai_minus_utc_on_day(int(unix_utc // _SECONDS_PER_DAY))


def current_tai() -> float:
    """The current TAI time as Unix-epoch seconds."""
    now = time.time()
    return now + tai_minus_utc(now)


def tai_isot(tai: float) -> str:
    """Unix-epoch TAI seconds as astropy's ``Time(tai, format="unix_tai").isot``
    (milliseconds, rounded), without the ``Time``, which costs more than the rest of a
    file's header."""
    seconds, milliseconds = divmod(round(tai * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milliseconds:03d}"


def tai_mjd(tai: float) -> float:
    """Unix-epoch TAI seconds as a TAI MJD (astropy's ``.mjd`` of them)."""
    return _UNIX_EPOCH_MJD + tai / _SECONDS_PER_DAY
