"""The archive catalog: one database row per archived file (the seeds' "Data Backbone").

A package of its own because more than the archiver uses it: OCS Batch joins the images a job
processes (selected in the Butler repository) with it and records its jobs in the same database.
"""

from cscs.catalog.batch import BatchRecords, CalibrationRecord, JobRecord
from cscs.catalog.catalog import ArchivedFile, Catalog, CatalogError, Observation, sqlite_url

__all__ = [
    "ArchivedFile",
    "BatchRecords",
    "CalibrationRecord",
    "Catalog",
    "CatalogError",
    "JobRecord",
    "Observation",
    "sqlite_url",
]
