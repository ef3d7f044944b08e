"""The repository's seed configuration: what ``butler.yaml`` in the archive root says, so
that every process that opens the archive (the OODS, OCS Batch, a user's ``butler``
command) knows our storage class and its formatter.

A storage class defined only in Python is unknown to the next process (it fails with
``KeyError``): it goes in the seed, and with it the formatter that reads it.
"""

from __future__ import annotations

import re
from typing import Any

from cscs.repository.formatter import FitsFormatter
from cscs.repository.postgres import registry_url as driver_url

__all__ = ["SQLITE_REGISTRY", "STORAGE_CLASS", "check_namespace", "seed_config"]

#: Raws, calibration products: a FITS file read as an astropy ``HDUList``.
STORAGE_CLASS = "RawFits"
#: The SQLite registry, in the repository's (the archive's) root.
SQLITE_REGISTRY = "sqlite:///<butlerRoot>/butler.sqlite3"
_NAMESPACE = re.compile(r"[a-z_][a-z0-9_]{0,40}")


def check_namespace(namespace: str) -> str:
    """A PostgreSQL schema name for the registry's tables; ValueError saying why not."""
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            f"registry namespace {namespace[:60]!r} must be lower-case letters, digits and "
            "underscores, at most 41, not starting with a digit"
        )
    return namespace


def seed_config(registry_url: str = "", namespace: str = "") -> dict[str, Any]:
    """The seed: SQLite in the repository's root (``butler.sqlite3``) if ``registry_url``
    is empty, else that database, its tables in schema ``namespace``."""
    formatter = f"{FitsFormatter.__module__}.{FitsFormatter.__qualname__}"
    config: dict[str, Any] = {
        "storageClasses": {STORAGE_CLASS: {"pytype": "astropy.io.fits.HDUList"}},
        "datastore": {"formatters": {STORAGE_CLASS: formatter}},
    }
    registry: dict[str, Any] = {"db": driver_url(registry_url) if registry_url else SQLITE_REGISTRY}
    if registry_url and namespace:
        registry["namespace"] = check_namespace(namespace)
    config["registry"] = registry
    return config
