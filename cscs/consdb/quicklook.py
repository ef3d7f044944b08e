"""OCS Batch's quick-look QC as the schema's quick-look columns, in the schema's units.

Per detector (``ccdvisit1_quicklook``, visit = exposure as in the observatory's visit
system 1), from the catalog's QC row of that detector:

* ``psf_sigma`` (pixels, the PSF's second-moment determinant radius): our ``psfFwhm``
  is 2.3548 times that same radius, (Ixx Iyy - Ixy²)^¼, in arcseconds at the camera's
  pixel scale, so ``psf_sigma = psfFwhm / 2.3548 / pixel_scale`` gives it back exactly;
* ``sky_bg``, ``sky_noise`` (counts per pixel over the exposure): our ``skyMean`` and
  ``skyRms``, ADU above the bias;
* ``zero_point`` (mag): the observatory's is the magnitude giving one count in the
  whole exposure (``2.5 log10`` of the flux at magnitude zero); ours gives 1 ADU/s,
  so ``zero_point = zeroPoint + 2.5 log10(exp_time)``;
* ``n_psf_star``: our ``nPsfStars``.

The observatory's counts are electrons after ISR, ours raw ADU: no gain is known here,
so ``sky_bg``, ``sky_noise`` and ``zero_point`` stay in ADU (docs/consdb.md). Per image
(``visit1_quicklook``): LATISS's one detector's values; ComCam's and LSSTCam's
``*_min``, ``*_max``, ``*_median`` over the detectors measured, ``n_psf_star_total``,
and ``n_inputs`` (detectors measured). The PSF's e1/e2 and our source counts have no
column of the same definition and are left out.

Pure: values in, rows out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cscs.camera.geometry import Camera
from cscs.consdb.headers import ccdexposure_id, detector_number
from cscs.consdb.values import finite, undefined

__all__ = ["FWHM_PER_SIGMA", "QuicklookRows", "quicklook_rows"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # a Gaussian's, 2.3548

#: Our metric: its name in the QC payload (ICD) and in the catalog's table.
_NAMES = {
    "psf_fwhm": ("psfFwhm", "psf_fwhm"),
    "sky_mean": ("skyMean", "sky_mean"),
    "sky_rms": ("skyRms", "sky_rms"),
    "zero_point": ("zeroPoint", "zero_point"),
    "n_psf_stars": ("nPsfStars", "n_psf_stars"),
}
_AGGREGATED = ("psf_sigma", "sky_bg", "sky_noise", "zero_point", "n_psf_star")


@dataclass(frozen=True)
class QuicklookRows:
    """An image's quick-look rows (values not yet fitted to their columns)."""

    detectors: list[dict[str, object]]
    visit: dict[str, object]
    warnings: list[str] = field(default_factory=list)


def quicklook_rows(
    camera: Camera,
    image: str,
    ids: tuple[int, int, int],
    exp_time: float | None,
    qc: Mapping[str, Mapping[str, Any]],
    recorded: set[int],
) -> QuicklookRows:
    """The rows of ``image`` (``ids``: exposure id, day_obs, seq_num) from ``qc``
    (sensor → the catalog's QC of it), for the detectors in ``recorded`` (those with a
    ``ccdexposure`` row); ValueError if a sensor is not this camera's."""
    exposure, day_obs, seq_num = ids
    warnings: list[str] = []
    detectors: list[dict[str, object]] = []
    for sensor in sorted(qc):
        number = detector_number(camera, camera.detector(str(sensor)))
        if number not in recorded:
            warnings.append(f"{image} {sensor}: no ccdexposure row (file not recorded): QC skipped")
            continue
        where = f"{image} {sensor}"
        values = {key: _metric(qc[sensor], key, where, warnings) for key in _NAMES}
        detectors.append({
            "day_obs": day_obs,
            "seq_num": seq_num,
            "detector": number,
            "ccdvisit_id": ccdexposure_id(exposure, number),
            **_converted(camera, values, exp_time, where, warnings),
        })  # fmt: skip
    visit: dict[str, object] = {"visit_id": exposure, "day_obs": day_obs, "seq_num": seq_num}
    visit.update(_aggregates(detectors))
    return QuicklookRows(detectors, visit, warnings)


def _metric(metrics: Mapping[str, Any], key: str, where: str, warnings: list[str]) -> float | None:
    value = next((metrics[name] for name in _NAMES[key] if name in metrics), None)
    if undefined(value):
        return None
    number = finite(value)
    if number is None:
        shown = "a huge integer" if isinstance(value, int) else repr(str(value)[:40])
        warnings.append(f"{where}: QC {key} = {shown} is not a finite number: NULL")
    return number


def _converted(
    camera: Camera,
    values: Mapping[str, float | None],
    exp_time: float | None,
    where: str,
    warnings: list[str],
) -> dict[str, object]:
    fwhm, zero_point, stars = values["psf_fwhm"], values["zero_point"], values["n_psf_stars"]
    if zero_point is not None and (exp_time is None or exp_time <= 0):
        warnings.append(f"{where}: no exposure time to scale the zero point to: NULL")
        zero_point = None
    return {
        "psf_sigma": None if fwhm is None else fwhm / FWHM_PER_SIGMA / camera.pixel_scale,
        "sky_bg": values["sky_mean"],
        "sky_noise": values["sky_rms"],
        "zero_point": None if zero_point is None else zero_point + 2.5 * math.log10(exp_time),  # type: ignore[arg-type]
        "n_psf_star": None if stars is None or not stars.is_integer() else int(stars),
    }


def _aggregates(detectors: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Every aggregate a schema may have; the table's own columns pick theirs (LATISS's
    plain columns take the median of its one detector: its value)."""
    result: dict[str, object] = {"n_inputs": len(detectors)}
    for column in _AGGREGATED:
        values = [row[column] for row in detectors if row[column] is not None]
        if not values:
            continue
        if column == "n_psf_star":
            numbers = [int(value) for value in values]  # type: ignore[call-overload]
            median: object = statistics.median_low(numbers)
            result[f"{column}_total"] = sum(numbers)
        else:
            median = statistics.median(values)  # type: ignore[type-var]
        result[column] = median
        result[f"{column}_median"] = median
        result[f"{column}_min"] = min(values)  # type: ignore[type-var]
        result[f"{column}_max"] = max(values)  # type: ignore[type-var]
    return result
