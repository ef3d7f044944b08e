"""Each detector's own primary keywords: where it is, which CCD it is, where it looks.

``RAFTBAY``/``CCDSLOT``/``DETSIZE`` follow from the geometry; ``CCD_MANU``, ``CCD_TYPE``,
``LSST_NUM`` and ``CCD_SERN`` from the camera's ``focalPlaneSummaryInfo`` (which CCD is
in which slot); the celestial WCS from the pointing at mid-exposure, the rotator angle
and the detector's place in the focal plane (:func:`cscs.camera.sky.detector_wcs`). What
is not known is :class:`Missing` with the reason, as everywhere in a header.
"""

from __future__ import annotations

from collections.abc import Mapping

from cscs.camera.events import CcdHardware
from cscs.camera.geometry import Camera, detector_keywords
from cscs.camera.sky import Pointing, detector_wcs, wcs_keyword_names
from cscs.header_service.collect import Missing, Value, number_of

__all__ = ["HARDWARE_KEYWORDS", "detector_entries", "mid_exposure_pointing"]

Entries = list[tuple[str, Value | Missing]]
HARDWARE_KEYWORDS = ("CCD_MANU", "CCD_TYPE", "LSST_NUM", "CCD_SERN")
_WCS_COMMENTS = {
    "WCSAXES": "celestial WCS: TAN about the pointing at mid-exposure",
    "CRVAL1": "RA of the optical axis (ICRS)",
    "CRVAL2": "Dec of the optical axis (ICRS)",
    "CRPIX1": "optical axis in this detector's pixels",
    "CRPIX2": "optical axis in this detector's pixels",
}


def mid_exposure_pointing(collected: Mapping[str, Value | Missing]) -> Pointing | Missing:
    """The optical axis at mid-exposure: halfway between where the mount was at start and
    end (``RASTART``… ``DECEND``), else the target (``RA``/``DEC``); and ``ROTPA``."""
    keys = ("RA", "DEC", "RASTART", "DECSTART", "RAEND", "DECEND", "ROTPA")
    numbers = {k: number_of(collected.get(k), k) for k in keys}
    for key in ("DEC", "DECSTART", "DECEND"):  # from the bus: not always a declination
        value = numbers[key]
        if isinstance(value, float) and not -90.0 <= value <= 90.0:
            numbers[key] = f"{key} {value:g} is not a declination"
    rotation = numbers["ROTPA"]
    if isinstance(rotation, str):
        return Missing(f"no rotator angle: {rotation}")
    ends = [numbers[k] for k in ("RASTART", "DECSTART", "RAEND", "DECEND")]
    if all(isinstance(n, float) for n in ends):
        ra0, dec0, ra1, dec1 = (float(n) for n in ends)
        step = (ra1 - ra0 + 180.0) % 360.0 - 180.0  # the short way round through RA 0
        return Pointing((ra0 + step / 2) % 360.0, (dec0 + dec1) / 2, rotation)
    ra, dec = numbers["RA"], numbers["DEC"]
    if isinstance(ra, str) or isinstance(dec, str):
        return Missing(f"no pointing: {ra if isinstance(ra, str) else dec}")
    return Pointing(ra % 360.0, dec, rotation)


def _hardware_entries(
    sensor: str, hardware: Mapping[str, CcdHardware] | None, source: str
) -> Entries:
    if hardware is None:
        reason = Missing(f"no focalPlaneSummaryInfo from {source}")
        return [(k, reason) for k in HARDWARE_KEYWORDS]
    ccd = hardware.get(sensor)
    if ccd is None:
        reason = Missing(f"{source} focalPlaneSummaryInfo does not list {sensor}")
        return [(k, reason) for k in HARDWARE_KEYWORDS]
    return [
        ("CCD_MANU", Value(ccd.manufacturer, "", "CCD manufacturer")),
        ("CCD_TYPE", Value(ccd.type, "", "CCD model")),
        ("LSST_NUM", Value(ccd.lsst_name, "", "the CCD's LSST name")),
        ("CCD_SERN", Value(ccd.serial, "", "manufacturer's serial number")),
    ]


def detector_entries(
    camera: Camera,
    sensor: str,
    hardware: Mapping[str, CcdHardware] | None,
    pointing: Pointing | Missing,
    source: str,
) -> Entries:
    """``sensor``'s primary keywords, in header order. ``source``: the camera, for the
    reason a hardware keyword is missing."""
    detector = camera.detector(sensor)
    entries: Entries = [(k, Value(v)) for k, v in detector_keywords(detector).items()]
    entries += _hardware_entries(sensor, hardware, source)
    if isinstance(pointing, Missing):
        return entries + [(k, Missing(f"no WCS: {pointing.reason}")) for k in wcs_keyword_names()]
    wcs = detector_wcs(camera, detector, pointing).keywords()
    return entries + [(k, Value(v, "", _WCS_COMMENTS.get(k, ""))) for k, v in wcs.items()]
