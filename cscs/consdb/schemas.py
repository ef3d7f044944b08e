"""The consolidated database's schemas, as the observatory defines them: the Felis YAML
files of the pinned ``lsst-sdm-schemas``, turned into SQLAlchemy tables by ``felis``.

One schema per camera (``cdb_latiss``, ``cdb_lsstcomcam``, ``cdb_lsstcam``), each with
the same table names (``exposure``, ``ccdexposure``, the quick-look tables). On
PostgreSQL they are schemas of one database, as at the observatory; on SQLite, which has
no schemas, each is a file of its own (docs/decisions/0037).
"""

from __future__ import annotations

import functools
from importlib.metadata import version
from importlib.resources import files

import sqlalchemy as sa
from felis.datamodel import Schema
from felis.metadata import create_metadata

__all__ = ["SCHEMAS", "schema_name", "schema_tables", "sdm_schemas_version"]

#: Our instrument names (DM's, the butler's) → the ConsDB schema of that camera.
SCHEMAS: dict[str, str] = {
    "LATISS": "cdb_latiss",
    "LSSTComCam": "cdb_lsstcomcam",
    "LSSTCam": "cdb_lsstcam",
}


def schema_name(instrument: str) -> str:
    """The ConsDB schema of ``instrument``; ValueError naming the ones known."""
    try:
        return SCHEMAS[instrument]
    except KeyError:
        known = ", ".join(SCHEMAS)
        raise ValueError(
            f"no ConsDB schema for instrument {instrument[:40]!r} (known: {known})"
        ) from None


@functools.cache
def schema_tables(name: str, *, qualified: bool) -> sa.MetaData:
    """The tables of schema ``name`` built by felis from the pinned YAML file;
    ``qualified`` puts them in the database schema of that name (PostgreSQL), otherwise
    they are unqualified (SQLite: the file is the schema). Built once per process: it
    takes most of a second."""
    resource = files("lsst.sdm.schemas") / f"{name}.yaml"
    with resource.open(encoding="utf-8") as stream:
        schema = Schema.from_stream(stream, context={"id_generation": True})
    engine_url = None if qualified else "sqlite://"
    return create_metadata(schema, engine_url=engine_url)


def sdm_schemas_version() -> str:
    """The version of ``lsst-sdm-schemas`` the tables come from (for messages)."""
    return version("lsst-sdm-schemas")
