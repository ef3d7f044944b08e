"""The catalog's schema version, recorded in the database, and the steps that bring a
catalog an earlier release made up to this one (on SQLite and PostgreSQL alike).

A catalog holds the archive's only record of which file is which: it is upgraded in
place, never rebuilt. Version 1 is every catalog made before versions were recorded
(2026-11-21 and earlier: no ``schema_version`` table). Processes that open a catalog at
the same moment (an archiver and OCS Batch) take turns: a lock (a lock file beside a
SQLite database, an advisory lock on PostgreSQL) is held while the version is read,
the steps run, the tables are made and the version recorded. Each step looks at what
is there before changing it, so a step cut short (SQLite commits each ``ALTER TABLE``
by itself) is finished on the next open, and the version is judged by the tables'
shape until it is recorded. A version newer than this code knows is refused: an older
release must not write into a schema it does not understand.

Why not Alembic: one table of one row and a handful of ``ALTER TABLE`` statements,
run by the product itself on open, against Alembic's environment, scripts directory
and revision graph (docs/decisions/0020).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa

__all__ = ["SCHEMA_VERSION", "VERSIONS", "upgrade"]

SCHEMA_VERSION = 3

VERSIONS = sa.Table(
    "schema_version",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),  # always 1: one row
    sa.Column("version", sa.Integer, nullable=False),
)

#: The tables whose file checksum changed in version 2.
_CHECKSUMMED = ("archived_files", "calibration_products")
_LOCK_KEY = 0x63736373  # PostgreSQL advisory lock: "cscs"


def _to_2(connection: sa.Connection) -> None:
    """File checksums: Adler-32 by default (ICD 1.1), with their algorithm recorded;
    every checksum already there is an MD5, and stays one."""
    quote = connection.dialect.identifier_preparer.quote
    for table in _CHECKSUMMED:
        columns = _columns(connection, table)
        if columns is None:
            continue
        name = quote(table)
        if "md5" in columns:
            connection.execute(sa.text(f"ALTER TABLE {name} RENAME COLUMN md5 TO checksum"))
        if "checksum_algorithm" not in columns:
            connection.execute(sa.text(
                f"ALTER TABLE {name} ADD COLUMN checksum_algorithm VARCHAR(16) "
                "NOT NULL DEFAULT 'md5'"
            ))  # fmt: skip
            if connection.dialect.name == "postgresql":  # SQLite cannot drop a default
                connection.execute(sa.text(
                    f"ALTER TABLE {name} ALTER COLUMN checksum_algorithm DROP DEFAULT"
                ))  # fmt: skip


def _to_3(connection: sa.Connection) -> None:
    """Each file's header provenance (``header_source``: "", "live" or "efd", headers
    rebuilt from the EFD being new): every header archived before was collected live."""
    columns = _columns(connection, "archived_files")
    if columns is None or "header_source" in columns:
        return
    connection.execute(sa.text(
        "ALTER TABLE archived_files ADD COLUMN header_source VARCHAR(8) NOT NULL DEFAULT ''"
    ))  # fmt: skip
    connection.execute(sa.text(
        "UPDATE archived_files SET header_source = 'live' WHERE header_url <> ''"
    ))  # fmt: skip


#: What brings version N-1 to N.
_STEPS: dict[int, Callable[[sa.Connection], None]] = {2: _to_2, 3: _to_3}


def upgrade(engine: sa.Engine, create: Callable[[sa.Engine], None]) -> int:
    """Bring the catalog at ``engine`` to :data:`SCHEMA_VERSION`; ``create`` makes the
    tables that do not exist (a new catalog is made at the current version). The
    version found; ValueError if it is newer than this code."""
    with _exclusive(engine):
        with engine.connect() as connection:
            found = _read(connection)
        if found > SCHEMA_VERSION:
            raise ValueError(
                f"the catalog's schema is version {found}, newer than this software's "
                f"{SCHEMA_VERSION}: use the release that made it, or a newer one"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            with engine.begin() as connection:
                _STEPS[version](connection)
                _write(connection, version)
        create(engine)
        with engine.begin() as connection:
            if _read(connection, recorded_only=True) != SCHEMA_VERSION:
                _write(connection, SCHEMA_VERSION)
    return found


@contextlib.contextmanager
def _exclusive(engine: sa.Engine) -> Iterator[None]:
    """One process at a time past this point, for this database."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                connection.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield  # nobody else can see it
        return
    with open(Path(database).with_name(Path(database).name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(connection: sa.Connection, recorded_only: bool = False) -> int:
    """The version recorded; without a record, what the tables' shape says: 1 while a
    checksummed table is still as version 1 made it (or half-way to 2), 2 while the
    files have no ``header_source``, else the current one (a catalog this code made, or
    none yet); 0 with ``recorded_only``."""
    if sa.inspect(connection).has_table(VERSIONS.name):
        row = connection.execute(sa.select(VERSIONS.c.version)).first()
        if row is not None:
            return int(row.version)
    if recorded_only:
        return 0
    for table in _CHECKSUMMED:
        columns = _columns(connection, table)
        if columns is not None and ("md5" in columns or "checksum_algorithm" not in columns):
            return 1
    files = _columns(connection, "archived_files")
    if files is not None and "header_source" not in files:
        return 2
    return SCHEMA_VERSION


def _columns(connection: sa.Connection, table: str) -> set[str] | None:
    inspector = sa.inspect(connection)
    if not inspector.has_table(table):
        return None
    return {column["name"] for column in inspector.get_columns(table)}


def _write(connection: sa.Connection, version: int) -> None:
    VERSIONS.create(connection, checkfirst=True)
    if connection.execute(sa.update(VERSIONS).values(version=version)).rowcount == 0:
        connection.execute(sa.insert(VERSIONS).values(id=1, version=version))
