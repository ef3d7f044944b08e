"""The observatory's numbers for exposures and detectors (``obs_lsst``'s), so that a data
ID typed by a Rubin user (``exposure = 2026112100001``, ``detector = 4``) means here what
it means at the observatory. Pure; imports no Butler.

* An exposure is ``day_obs * 100_000 + seq_num`` for images of the OCS controller
  (``O``); the other controllers shift the year by a thousand each (``C`` +1000,
  ``H`` +2000, ``P`` +3000, ``Q`` +4000), as ``obs_lsst`` does, so that their images
  never share a number with the OCS's. At most 99 999 images a day.
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
    "detector_id",
    "detector_ids",
    "detector_purpose",
    "exposure_id",
]

#: The most images one controller takes in a day that still have an exposure number.
MAX_SEQ_NUM = 99_999
_CONTROLLER_YEARS = {"O": 0, "C": 1000, "H": 2000, "P": 3000, "Q": 4000}
#: The instrument an image name's camera code (``AT_O_…``) stands for.
INSTRUMENTS = {"AT": "LATISS", "CC": "LSSTComCam", "MC": "LSSTCam"}
CORNER_RAFTS = ("R00", "R04", "R40", "R44")
_CORNER_SLOTS = ("SG0", "SG1", "SW0", "SW1")
_SLOTS = tuple(f"S{x}{y}" for x in range(3) for y in range(3))


def exposure_id(image: str) -> int:
    """The exposure number of image ``image`` (``AT_O_20261121_000001`` →
    ``2026112100001``); ValueError naming why there is none."""
    name = ImageName.parse(image)
    shift = _CONTROLLER_YEARS.get(name.controller)
    if shift is None:
        raise ValueError(
            f"{image}: controller {name.controller!r} has no exposure numbers "
            f"(known: {', '.join(_CONTROLLER_YEARS)})"
        )
    if name.seq_num > MAX_SEQ_NUM:
        raise ValueError(f"{image}: sequence number {name.seq_num} is over {MAX_SEQ_NUM}")
    return (int(name.day_obs) + shift * 10_000) * 100_000 + name.seq_num


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
