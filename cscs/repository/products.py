"""OCS Batch's products beside the raws, where a Rubin user looks for them.

Calibrations: a master ``bias``, ``dark`` or ``flat`` (dimensions instrument, detector;
a calibration dataset type) is ingested where OCS Batch wrote it (``direct``: the
archive keeps the file) into RUN ``{instrument}/calib/{job_id}``, and certified in the
CALIBRATION collection ``{instrument}/calib`` from ``valid_from_tai`` until the start
of the next product of the same kind and detector there (unbounded if none), so that
``butler.get("bias", instrument=…, detector=…, collections="LATISS/calib",
timespan=…)`` gives the master that applied at that time. A product certified later
with a later start supersedes it from its start (the earlier one's validity is cut
there by ``decertify``); one with the same start replaces it; one with an earlier start
(a job run late) fills only the time until the next one. Registering the same product
again changes nothing.

QC: one ``quickLookQc`` dataset (dimensions instrument, detector, exposure; a plain
dictionary, stored as YAML) per measured detector, in RUN
``{instrument}/runs/quickLookQc``. Measured again with other values, it is replaced
(the old dataset pruned, the new one put: if the put fails the QC is absent until the
call is retried, which RepositoryError asks for); with the same values, nothing is
written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.time
from lsst.daf.butler import (
    Butler,
    DataCoordinate,
    DatasetRef,
    DatasetType,
    FileDataset,
    Timespan,
)
from lsst.daf.butler._collection_type import CollectionType  # not re-exported for mypy
from lsst.daf.butler._exceptions import DataIdValueError

from cscs.camera.naming import ImageName
from cscs.camera.observatory import astropy_time
from cscs.repository.config import STORAGE_CLASS
from cscs.repository.errors import ProductRefusedError
from cscs.repository.ids import INSTRUMENTS, detector_id, exposure_id

__all__ = [
    "CALIBRATION_KINDS",
    "QC",
    "RegisteredCalibration",
    "calibration_collection",
    "calibration_run",
    "certify_calibration",
    "put_qc",
    "qc_run",
    "qc_values",
]

CALIBRATION_KINDS = ("bias", "dark", "flat")
CALIBRATION_DIMENSIONS = ("instrument", "detector")
QC = "quickLookQc"
QC_DIMENSIONS = ("instrument", "detector", "exposure")
QC_STORAGE_CLASS = "StructuredDataDict"
MAX_METRICS = 200
MAX_TEXT = 256
_JOB_ID_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def calibration_run(instrument: str, job_id: str) -> str:
    """The RUN collection of one OCS Batch job's calibration products."""
    return f"{instrument}/calib/{job_id}"


def calibration_collection(instrument: str) -> str:
    """The CALIBRATION collection where ``instrument``'s masters are certified."""
    return f"{instrument}/calib"


def qc_run(instrument: str) -> str:
    """The RUN collection of ``instrument``'s per-detector quick-look QC."""
    return f"{instrument}/runs/quickLookQc"


@dataclass(frozen=True)
class RegisteredCalibration:
    """A master in the repository: its dataset, and its validity in ``collection`` as
    certified by this call (a later product may shorten it); ``valid_until_tai`` None:
    unbounded. ``changed``: this call ingested or certified it."""

    kind: str
    instrument: str
    sensor: str
    detector: int
    path: Path
    run: str
    collection: str
    valid_from_tai: float
    valid_until_tai: float | None
    changed: bool


def calibration_dataset_type(butler: Butler, kind: str) -> DatasetType:
    return DatasetType(kind, CALIBRATION_DIMENSIONS, STORAGE_CLASS,
                       universe=butler.dimensions, isCalibration=True)  # fmt: skip


def qc_dataset_type(butler: Butler) -> DatasetType:
    return DatasetType(QC, QC_DIMENSIONS, QC_STORAGE_CLASS, universe=butler.dimensions)


def check_calibration(
    kind: str, instrument: str, sensor: str, path: Path, job_id: str, valid_from_tai: float
) -> tuple[int, Path]:
    """The detector number and absolute path, or ProductRefusedError naming what is wrong."""
    if kind not in CALIBRATION_KINDS:
        raise ProductRefusedError(f"calibration kind {str(kind)[:20]!r} is not one of "
                                  f"{', '.join(CALIBRATION_KINDS)}")  # fmt: skip
    detector = _detector(instrument, sensor)
    if not (isinstance(job_id, str) and 0 < len(job_id) <= 64
            and set(job_id) <= _JOB_ID_CHARACTERS and job_id[0].isalnum()):  # fmt: skip
        raise ProductRefusedError(
            f"job id {str(job_id)[:40]!r} must be 1 to 64 letters, digits, '_', '.' or '-'"
        )
    if (isinstance(valid_from_tai, bool) or not isinstance(valid_from_tai, int | float)
            or not math.isfinite(valid_from_tai) or valid_from_tai <= 0):  # fmt: skip
        raise ProductRefusedError(f"valid_from_tai {str(valid_from_tai)[:30]} is not a time")
    absolute = Path(path).absolute()
    if not absolute.is_file():
        raise ProductRefusedError(f"the {kind} product {absolute} is not a file")
    return detector, absolute


def certify_calibration(
    butler: Butler, kind: str, instrument: str, sensor: str, path: Path, *,
    detector: int, job_id: str, valid_from_tai: float,
) -> RegisteredCalibration:  # fmt: skip
    """Ingest (once) and certify (once) one checked master; see the module's
    documentation. The caller holds a transaction and turns database failures into
    RepositoryError."""
    run, collection = calibration_run(instrument, job_id), calibration_collection(instrument)
    butler.collections.register(run)
    butler.collections.register(collection, CollectionType.CALIBRATION)
    data_id: dict[str, int | str] = {"instrument": instrument, "detector": detector}
    changed = False
    ref = butler.find_dataset(kind, data_id, collections=run)
    if ref is None:
        coordinate = DataCoordinate.standardize(data_id, universe=butler.dimensions)
        ref = DatasetRef(butler.get_dataset_type(kind), coordinate, run=run)
        butler.ingest(FileDataset(path=str(path), refs=[ref]), transfer="direct",
                      record_validation_info=False)  # fmt: skip
        changed = True
    else:
        held = Path(butler.getURI(ref).ospath)
        if held.resolve() != path.resolve():
            raise ProductRefusedError(
                f"job {job_id}'s {kind} for {instrument} {sensor} is registered from {held}"
            )
    begin = astropy_time(float(valid_from_tai))
    mine: list[Timespan | None] = []
    others: list[Timespan] = []  # other products' validity for this detector
    for association in butler.registry.queryDatasetAssociations(
        kind, collection, collectionTypes={CollectionType.CALIBRATION}
    ):
        if association.ref.id == ref.id:
            mine.append(association.timespan)
        elif association.ref.dataId["detector"] == detector and association.timespan:
            others.append(association.timespan)
    later = [t.begin for t in others if isinstance(t.begin, astropy.time.Time) and t.begin > begin]
    timespan = Timespan(begin, min(later) if later else None)
    if timespan not in mine:
        if any(t.overlaps(timespan) for t in others) or mine:
            # (Only then: this version's decertify fails on a collection that holds
            # nothing of this kind yet.)
            butler.registry.decertify(collection, kind, timespan, dataIds=[data_id])
        butler.registry.certify(collection, [ref], timespan)
        changed = True
    return RegisteredCalibration(
        kind, instrument, sensor, detector, path, run, collection, float(valid_from_tai),
        _tai(timespan.end), changed,
    )  # fmt: skip


def qc_values(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` as the dataset holds them: names (identifiers) to numbers, short
    strings, booleans or None; a value that is not a finite number (NaN: not measured)
    is None. ProductRefusedError naming the first thing that is not."""
    if not isinstance(metrics, Mapping):
        raise ProductRefusedError("QC metrics must be a mapping of names to values")
    if len(metrics) > MAX_METRICS:
        raise ProductRefusedError(f"{len(metrics)} QC metrics, more than {MAX_METRICS}")
    values: dict[str, Any] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 64:
            raise ProductRefusedError(f"QC metric name {str(name)[:40]!r} is not an identifier")
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif isinstance(value, str):
            if len(value) > MAX_TEXT or not value.isprintable():
                raise ProductRefusedError(
                    f"QC metric {name!r} is text longer than {MAX_TEXT} or not printable"
                )
        elif value is not None and not isinstance(value, bool | int | float):
            raise ProductRefusedError(
                f"QC metric {name!r} is a {type(value).__name__}: numbers, text, booleans only"
            )
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            raise ProductRefusedError(f"QC metric {name!r} does not fit 64 bits")
        values[name] = value
    return values


def qc_data_id(instrument: str, image_name: str, sensor: str) -> dict[str, Any]:
    """The QC dataset's data ID, or ProductRefusedError naming what is wrong."""
    detector = _detector(instrument, sensor)
    try:
        name = ImageName.parse(str(image_name))
        number = exposure_id(str(image_name))
    except ValueError as exc:
        raise ProductRefusedError(f"image name {str(image_name)[:40]!r}: {exc}") from None
    if INSTRUMENTS.get(name.code) != instrument:
        raise ProductRefusedError(f"image {image_name} is not {instrument}'s")
    return {"instrument": instrument, "detector": detector, "exposure": number}


def put_qc(butler: Butler, data_id: dict[str, Any], values: dict[str, Any], image: str) -> bool:
    """The QC dataset of ``data_id`` holds ``values`` (True: written now); see the
    module's documentation. The caller turns database failures into RepositoryError."""
    try:
        butler.registry.expandDataId(data_id)
    except DataIdValueError:
        raise ProductRefusedError(
            f"image {image} is not in the repository: register its raws first"
        ) from None
    run = qc_run(str(data_id["instrument"]))
    butler.collections.register(run)
    existing = butler.find_dataset(QC, data_id, collections=run)
    if existing is not None:
        if butler.get(existing) == values:
            return False
        butler.pruneDatasets([existing], disassociate=True, unstore=True, purge=True)
    butler.put(values, QC, data_id, run=run)
    return True


def _tai(moment: Any) -> float | None:
    """A timespan's bound as Unix-epoch TAI seconds; None if unbounded."""
    return float(moment.to_value("unix_tai")) if isinstance(moment, astropy.time.Time) else None


def _detector(instrument: str, sensor: str) -> int:
    try:
        return detector_id(str(instrument), str(sensor))
    except ValueError as exc:
        raise ProductRefusedError(str(exc)) from None
