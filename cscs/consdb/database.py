"""The consolidated database: one ``exposure`` row per image and one ``ccdexposure`` row
per file, from the headers, and the quick-look QC, in the observatory's own schemas.

Blocking (SQLAlchemy Core); async callers use ``asyncio.to_thread``. Every write is an
upsert in one transaction: an image recorded again (its header rebuilt from the EFD)
updates its rows, QC measured again replaces the last.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cscs.camera.naming import ImageName
from cscs.consdb.headers import camera_of, exposure_id, image_rows
from cscs.consdb.quicklook import quicklook_rows
from cscs.consdb.schemas import SCHEMAS, schema_name, schema_tables
from cscs.consdb.values import fit_row

__all__ = ["ConsDb", "ConsDbError", "sqlite_path"]

_LOCK_KEY = 0x63646230  # PostgreSQL advisory lock while the schemas are made: "cdb0"
_BUSY_TIMEOUT = 30.0  # s a SQLite writer waits for another (OCS Batch, a user's query)


class ConsDbError(Exception):
    """ConsDB could not be written or opened; the message names the cause (unreachable,
    locked, a schema missing, an image it cannot tell)."""


def sqlite_path(archive_root: Path, schema: str) -> Path:
    """Where schema ``schema`` lives on SQLite: a file of its own under the archive."""
    return archive_root / "consdb" / f"{schema}.sqlite3"


class ConsDb:
    """ConsDB on SQLite (a file per schema under the archive) or PostgreSQL (a schema per
    camera in one database, as at the observatory)."""

    def __init__(self, engines: Mapping[str, sa.Engine], *, qualified: bool, where: str) -> None:
        self._engines = dict(engines)  # schema name → its engine
        self._qualified = qualified
        self.where = where  # for messages: no password

    @classmethod
    def open(cls, url: str = "", *, archive_root: Path) -> ConsDb:
        """Open ConsDB, making the schemas that are absent (safe when two processes
        open it at once). ``""``: SQLite under ``archive_root``; ``postgresql://…``."""
        if url == "":
            engines = {
                name: _sqlite_engine(sqlite_path(archive_root, name)) for name in SCHEMAS.values()
            }
            db = cls(engines, qualified=False, where=f"SQLite under {archive_root / 'consdb'}")
        else:
            try:
                engine = _postgres_engine(url)
            except ImportError as exc:
                raise ConsDbError(f"ConsDB on PostgreSQL needs psycopg 3: {exc}") from exc
            where = engine.url.render_as_string(hide_password=True)
            db = cls(dict.fromkeys(SCHEMAS.values(), engine), qualified=True, where=where)
        try:
            db._create()
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            db.close()
            raise ConsDbError(f"cannot open ConsDB ({db.where}): {_cause(exc)}") from exc
        return db

    def close(self) -> None:
        for engine in set(self._engines.values()):
            engine.dispose()

    def table(self, instrument: str, name: str) -> sa.Table:
        """Table ``name`` of ``instrument``'s schema (for queries)."""
        schema = self._schema(instrument)
        tables = schema_tables(schema, qualified=self._qualified).tables
        return tables[f"{schema}.{name}" if self._qualified else name]

    def engine(self, instrument: str) -> sa.Engine:
        return self._engines[self._schema(instrument)]

    def record_image(self, instrument: str, headers: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Upsert the image's ``exposure`` row and a ``ccdexposure`` row per file from
        ``headers`` (sensor → its file's primary header; some of the image's files are
        enough). A header completed or rebuilt later updates the values; a value the
        new headers lack (a file archived before its header came) does not erase one
        already recorded. The warnings returned name each value left NULL and why;
        ConsDbError when nothing can be recorded."""
        try:
            rows = image_rows(instrument, headers)
        except ValueError as exc:
            raise ConsDbError(f"cannot record an image of {instrument[:40]!r}: {exc}") from exc
        warnings = list(rows.warnings)
        where = str(rows.exposure["exposure_name"])
        exposure = self.table(instrument, "exposure")
        ccds = self.table(instrument, "ccdexposure")
        fitted = fit_row(exposure, rows.exposure, where, warnings)
        ccd_rows = [fit_row(ccds, row, where, warnings) for row in rows.ccdexposures]
        with self._writing(instrument, f"image {where}") as connection:
            _upsert(connection, exposure, [fitted], keep_known=True)
            _upsert(connection, ccds, ccd_rows, keep_known=True)
        return warnings

    def record_quicklook(
        self, instrument: str, image_name: str, qc: Mapping[str, Mapping[str, Any]]
    ) -> list[str]:
        """Upsert the image's quick-look rows from ``qc`` (sensor → the catalog's QC of
        that detector). The image must be recorded first (its exposure time scales the
        zero point); ConsDbError otherwise. Warnings as for :meth:`record_image`."""
        try:
            camera = camera_of(instrument)
            image = ImageName.parse(image_name)
            if image.code != camera.code:
                raise ValueError(f"{image} is not a {instrument} image")
            ids = (exposure_id(image), int(image.day_obs), image.seq_num)
        except ValueError as exc:
            raise ConsDbError(f"cannot record quick-look QC: {exc}") from exc
        exposure = self.table(instrument, "exposure")
        ccds = self.table(instrument, "ccdexposure")
        ccd_table = self.table(instrument, "ccdvisit1_quicklook")
        visit_table = self.table(instrument, "visit1_quicklook")
        with self._writing(instrument, f"quick-look QC of {image}") as connection:
            key = (exposure.c.day_obs == ids[1]) & (exposure.c.seq_num == ids[2])
            row = connection.execute(sa.select(exposure.c.exp_time).where(key)).first()
            if row is None:
                raise ConsDbError(f"{image} is not in ConsDB: its QC waits for record_image")
            ccd_key = (ccds.c.day_obs == ids[1]) & (ccds.c.seq_num == ids[2])
            recorded = set(connection.scalars(sa.select(ccds.c.detector).where(ccd_key)))
            try:
                rows = quicklook_rows(camera, str(image), ids, row.exp_time, qc, recorded)
            except ValueError as exc:
                raise ConsDbError(f"cannot record quick-look QC of {image}: {exc}") from exc
            warnings = list(rows.warnings)
            detectors = [fit_row(ccd_table, r, str(image), warnings) for r in rows.detectors]
            _upsert(connection, ccd_table, detectors)
            if detectors:
                _upsert(
                    connection,
                    visit_table,
                    [fit_row(visit_table, rows.visit, str(image), warnings)],
                )
        return warnings

    def _schema(self, instrument: str) -> str:
        try:
            return schema_name(instrument)
        except ValueError as exc:
            raise ConsDbError(str(exc)) from None

    @contextlib.contextmanager
    def _writing(self, instrument: str, what: str) -> Iterator[sa.Connection]:
        try:
            with self.engine(instrument).begin() as connection:
                yield connection
        except sa.exc.SQLAlchemyError as exc:
            raise ConsDbError(
                f"cannot record {what} in ConsDB ({self.where}): {_cause(exc)}"
            ) from exc

    def _create(self) -> None:
        if not self._qualified:
            for name, engine in self._engines.items():
                with _file_lock(Path(str(engine.url.database))):
                    schema_tables(name, qualified=False).create_all(engine)
            return
        engine = next(iter(self._engines.values()))
        with engine.begin() as connection:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
            for name in self._engines:
                connection.execute(sa.schema.CreateSchema(name, if_not_exists=True))
                schema_tables(name, qualified=True).create_all(connection)


def _upsert(
    connection: sa.Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, object]],
    *,
    keep_known: bool = False,
) -> None:
    """Insert ``rows``, or update the ones whose primary key is there already; with
    ``keep_known`` a NULL does not replace a value the row has."""
    if not rows:
        return
    dialect = sqlite if connection.dialect.name == "sqlite" else postgresql
    insert = dialect.insert(table)
    keys = [column.name for column in table.primary_key]
    updated = {
        name: sa.func.coalesce(insert.excluded[name], table.c[name]) if keep_known
        else insert.excluded[name]
        for name in rows[0]
        if name not in keys
    }  # fmt: skip
    statement = insert.on_conflict_do_update(index_elements=keys, set_=updated)
    connection.execute(statement, list(rows))


def _sqlite_engine(path: Path) -> sa.Engine:
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": _BUSY_TIMEOUT})
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")  # a user's query never blocks the OODS
    cursor.execute("PRAGMA synchronous=FULL")  # a recorded row survives a power cut
    cursor.execute("PRAGMA foreign_keys=ON")  # the schema's keys, as PostgreSQL keeps them
    cursor.close()


def _postgres_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConsDbError(f"not a database URL: {url[:40]!r}") from exc
    if parsed.get_backend_name() != "postgresql":
        raise ConsDbError(
            f'ConsDB is SQLite under the archive ("") or PostgreSQL, not {parsed.drivername!r}'
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, as the catalog's
    return sa.create_engine(parsed, pool_pre_ping=True)


@contextlib.contextmanager
def _file_lock(database: Path) -> Iterator[None]:
    """One process at a time makes a SQLite file's tables."""
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cause(exc: BaseException) -> str:
    """The database's own words, without SQLAlchemy's statement and parameters dump."""
    original = getattr(exc, "orig", None)
    return str(original if original is not None else exc).strip().splitlines()[0][:300]
