"""TAI times written into every file's header without an astropy ``Time`` per file
(``cscs.core.tai``): the same text and MJD as astropy's for the same instant."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from cscs.camera.observatory import astropy_time
from cscs.core.tai import tai_isot, tai_mjd

# From 1990 to 2100, to the microsecond (the archive's files are written in between).
_TAI = st.integers(631152000_000000, 4102444800_000000).map(lambda us: us / 1e6)


@given(_TAI)
@example(1796688000.9995)  # rounds up into the next second
@example(1796774399.9999)  # ... and the next day
@example(1796688000.0)
def test_file_times_are_astropys_own(tai: float) -> None:
    expected = astropy_time(tai)
    assert tai_isot(tai) == expected.isot
    assert abs(tai_mjd(tai) - float(expected.mjd)) < 1e-9  # days: ~0.1 ms
