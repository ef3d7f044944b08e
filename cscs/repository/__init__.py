"""The archive as a Data Butler repository (the observatory's OODS repository): raws
registered in place with dimension records from their headers, data queries in the
Butler's own language, and OCS Batch's products beside the raws.

The API (blocking; async callers use ``asyncio.to_thread``)::

    repo = Repository.open(archive_root, registry_url="")  # "" = SQLite in the archive
    repo.register(paths) -> Registration          # .registered, .refused [(path, why)]
    repo.registered(paths) -> set[Path]            # which are in the repository
    repo.query_raws(where, bind=..., limit=N) -> list[RawRef]  # Butler expression
    repo.register_calibration(kind, instrument, sensor, path, *, job_id,
                              valid_from_tai) -> RegisteredCalibration
        # master bias/dark/flat ingested in place into RUN {instrument}/calib/{job_id},
        # certified in {instrument}/calib from valid_from_tai until the next master's start
    repo.record_qc(instrument, image_name, sensor, metrics) -> bool
        # quickLookQc (instrument, detector, exposure) in RUN {instrument}/runs/quickLookQc;
        # replaced when measured again with other values (True: written)
    repo.close()

Errors: RepositoryError (the repository failed: retry later), QueryRefusedError and
ProductRefusedError (both ValueError: the input is wrong, the message says how).

``cscs.repository.ids`` (exposure and detector numbers) imports no Butler; everything
else here does (~1.4 s): only the components that use the repository import it.
"""

from cscs.repository.errors import ProductRefusedError, QueryRefusedError, RepositoryError
from cscs.repository.ids import detector_id, exposure_id
from cscs.repository.products import (
    QC,
    RegisteredCalibration,
    calibration_collection,
    calibration_run,
    qc_run,
)
from cscs.repository.query import RawRef
from cscs.repository.repository import RegisteredFile, Registration, Repository, raw_run

__all__ = [
    "QC",
    "ProductRefusedError",
    "QueryRefusedError",
    "RawRef",
    "RegisteredCalibration",
    "RegisteredFile",
    "Registration",
    "Repository",
    "RepositoryError",
    "calibration_collection",
    "calibration_run",
    "detector_id",
    "exposure_id",
    "qc_run",
    "raw_run",
]
