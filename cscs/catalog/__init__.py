"""The archive catalog: one database row per archived file (the seeds' "Data Backbone").

A package of its own because more than the archiver uses it: OCS Batch queries it for
the images a job processes and records its jobs in the same database.
"""

from cscs.catalog.catalog import ArchivedFile, Catalog, CatalogError, sqlite_url

__all__ = ["ArchivedFile", "Catalog", "CatalogError", "sqlite_url"]
