"""The archive catalog: one database row per archived file (the seeds' "Data Backbone").

A package of its own because more than the archiver uses it: OCS Batch queries it for
the images a job processes and records its jobs in the same database.
"""

from cscs.catalog.batch import BatchRecords, CalibrationRecord, JobRecord
from cscs.catalog.catalog import ArchivedFile, Catalog, CatalogError, Observation, sqlite_url
from cscs.catalog.query import DataQuery, QueryError, parse_query

__all__ = [
    "ArchivedFile",
    "BatchRecords",
    "CalibrationRecord",
    "Catalog",
    "CatalogError",
    "DataQuery",
    "JobRecord",
    "Observation",
    "QueryError",
    "parse_query",
    "sqlite_url",
]
