"""The archive as a Data Butler repository (the observatory's OODS repository): raws
registered in place with dimension records from their headers, data queries in the
Butler's own language, and OCS Batch's products beside the raws.

``cscs.repository.ids`` (exposure and detector numbers) imports no Butler; everything
else here does (~1.4 s): only the components that use the repository import it.
"""

from cscs.repository.errors import QueryRefusedError, RepositoryError
from cscs.repository.ids import detector_id, exposure_id
from cscs.repository.query import RawRef
from cscs.repository.repository import RegisteredFile, Registration, Repository, raw_run

__all__ = [
    "QueryRefusedError",
    "RawRef",
    "RegisteredFile",
    "Registration",
    "Repository",
    "RepositoryError",
    "detector_id",
    "exposure_id",
    "raw_run",
]
