"""The observatory's identifiers of our images (``obs_lsst``'s): exposure and detector
numbers and physical filter names, so that a data ID typed by a Rubin user
(``exposure = 2026112100001``, ``detector = 4``, ``physical_filter = 'SDSSr_65mm~empty'``)
means here what it means at the observatory, in the Butler repository and in ConsDB
alike. Pure.

* An exposure is ``day_obs * 100_000 + seq_num`` (``LsstBaseTranslator.compute_exposure_id``);
  the day moves a thousand years per controller (``O``, ``C``, ``H``, ``P``, ``Q``,
  ``S`` in that order) for the controllers whose counters were not yet the OCS's: ``C``
  until 2023-10-04, ``P``, ``Q`` and ``S`` until 2025-04-17, ``H`` always. At most
  99 999 images a day.
* Detectors are numbered raft by raft (``R01`` … ``R43`` for LSSTCam, skipping the
  corner rafts), nine slots each (``S00``, ``S01``, ``S02``, ``S10`` … ``S22``), from 0:
  LSSTCam ``R01_S00`` is 0 and ``R43_S22`` 188; its corner rafts' guider and wavefront
  sensors follow, four per raft (``SG0``, ``SG1``, ``SW0``, ``SW1``; ``R00``, ``R04``,
  ``R40``, ``R44``): 189 … 204. ComCam's one raft ``R22`` is 0 … 8, LATISS's one CCD 0.
  Our camera geometry (:mod:`cscs.camera.geometry`) lists the science detectors in
  this same order; the tests check that they agree.
"""

from __future__ import annotations

import functools

from cscs.camera.naming import ImageName

__all__ = [
    "CORNER_RAFTS",
    "INSTRUMENTS",
    "MAX_SEQ_NUM",
    "NO_SKY_POSITION",
    "detector_id",
    "detector_ids",
    "detector_purpose",
    "exposure_id",
    "physical_filter",
]

#: Observation types the translators give no tracking position (a dark may still track).
NO_SKY_POSITION = frozenset({"bias", "flat"})
#: The most images one controller takes in a day that still have an exposure number.
MAX_SEQ_NUM = 99_999
_CONTROLLERS = "OCHPQS"  # obs_lsst's order: a thousand years of day_obs each
_UNIFIED_AFTER = {"C": 20231004, "P": 20250417, "Q": 20250417, "S": 20250417}
#: The instrument an image name's camera code (``AT_O_…``) stands for.
INSTRUMENTS = {"AT": "LATISS", "CC": "LSSTComCam", "MC": "LSSTCam"}
CORNER_RAFTS = ("R00", "R04", "R40", "R44")
_CORNER_SLOTS = ("SG0", "SG1", "SW0", "SW1")
_SLOTS = tuple(f"S{x}{y}" for x in range(3) for y in range(3))


def exposure_id(image: str) -> int:
    """The exposure number of image ``image`` (``AT_O_20261121_000001`` →
    ``2026112100001``); ValueError naming why there is none."""
    name = ImageName.parse(image)
    index = _CONTROLLERS.find(name.controller)
    if index < 0:
        raise ValueError(
            f"{image}: controller {name.controller!r} has no exposure numbers "
            f"(known: {', '.join(_CONTROLLERS)})"
        )
    if name.seq_num > MAX_SEQ_NUM:
        raise ValueError(f"{image}: sequence number {name.seq_num} is over {MAX_SEQ_NUM}")
    day = int(name.day_obs)
    unified = _UNIFIED_AFTER.get(name.controller)
    if unified is not None and day > unified:
        index = 0
    return (day + 1000_00_00 * index) * 100_000 + name.seq_num


@functools.cache
def detector_ids(instrument: str) -> dict[str, int]:
    """Every detector of ``instrument`` by full name (``R22_S11``), with its number;
    ValueError for an instrument we do not know."""
    if instrument == "LATISS":
        return {"R00_S00": 0}
    if instrument == "LSSTComCam":
        return {f"R22_{slot}": n for n, slot in enumerate(_SLOTS)}
    if instrument == "LSSTCam":
        rafts = [f"R{x}{y}" for x in range(5) for y in range(5)]
        science = [f"{r}_{s}" for r in rafts if r not in CORNER_RAFTS for s in _SLOTS]
        corners = [f"{r}_{s}" for r in CORNER_RAFTS for s in _CORNER_SLOTS]
        return {name: n for n, name in enumerate(science + corners)}
    raise ValueError(f"unknown instrument {instrument[:40]!r} (LATISS, LSSTComCam, LSSTCam)")


def detector_id(instrument: str, sensor: str) -> int:
    """``sensor``'s number in ``instrument``; ValueError naming what is unknown."""
    number = detector_ids(instrument).get(sensor)
    if number is None:
        raise ValueError(f"{instrument} has no detector {sensor[:40]!r}")
    return number


def detector_purpose(sensor: str) -> str:
    """``SCIENCE``, ``GUIDER`` or ``WAVEFRONT``, as the observatory's detector records
    say."""
    slot = sensor.rpartition("_")[2]
    return {"G": "GUIDER", "W": "WAVEFRONT"}.get(slot[1:2], "SCIENCE")


def physical_filter(instrument: str, filter_name: object, grating: object) -> str | None:
    """The physical filter as the translators name it: the header's ``FILTER``, and for
    LATISS ``FILTER~GRATING`` (an ``empty_N`` filter or grating is ``empty``; a grating
    the header lacks is ``unknown``); None when there is no filter name."""
    if not isinstance(filter_name, str) or not filter_name:
        return None
    if instrument != "LATISS":
        return filter_name
    name = "empty" if filter_name.lower().startswith("empty") else filter_name
    if not isinstance(grating, str):
        return f"{name}~unknown"
    disperser = "empty" if not grating or grating.lower().startswith("empty") else grating
    return f"{name}~{disperser}"
