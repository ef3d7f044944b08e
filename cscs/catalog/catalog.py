"""The archive catalog (the seeds' "Data Backbone" database): one row per archived file.

SQLAlchemy Core, so the same code runs on SQLite (the default: a file inside the
archive, nothing to install) and PostgreSQL (production: give a
``postgresql+psycopg://…`` URL). Calls are synchronous; the archiver runs them in worker
threads. The archive records a file's row once the file is whole and synced under a
temporary name, and names it only after the row is committed (one transaction for all
the files finished together: :meth:`Catalog.record_all`); at start, a temporary whose
row is committed is named, any other removed (docs/decisions/0040). So after start-up,
every row's file is whole under its name, and every file under its name has its row.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cscs.catalog.versions import upgrade

__all__ = ["ArchivedFile", "Catalog", "CatalogError", "Observation", "sqlite_url"]

METADATA = sa.MetaData()
FILES = sa.Table(
    "archived_files",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_name", sa.String(64), nullable=False, index=True),
    sa.Column("sensor", sa.String(16), nullable=False),
    sa.Column("instrument", sa.String(32), nullable=False),
    sa.Column("day_obs", sa.String(8), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("byte_size", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.String(32), nullable=False),
    sa.Column("checksum_algorithm", sa.String(16), nullable=False),
    sa.Column("header_complete", sa.Boolean, nullable=False),
    sa.Column("missing_keywords", sa.Text, nullable=False),
    sa.Column("daq_image", sa.Text, nullable=False),
    sa.Column("header_url", sa.Text, nullable=False),
    sa.Column("header_md5", sa.String(32), nullable=False),
    sa.Column("software_version", sa.String(32), nullable=False),
    sa.Column("exposure_start_tai", sa.Float, nullable=False),
    sa.Column("archived_tai", sa.Float, nullable=False),
    sa.Column("header_source", sa.String(8), nullable=False, server_default=""),
    sa.UniqueConstraint("image_name", "sensor", name="one_file_per_sensor"),
)
# An image's header values (one row per image, from its header, so an image archived
# without a header has none yet): what auto_qc and QC's catch-up decide on.
OBSERVATIONS = sa.Table(
    "observations",
    METADATA,
    sa.Column("image_name", sa.String(64), primary_key=True),
    sa.Column("image_type", sa.String(16), nullable=False),
    sa.Column("group_id", sa.String(64), nullable=False),
    sa.Column("filter", sa.String(64), nullable=False),
    sa.Column("band", sa.String(16), nullable=False),
    sa.Column("exposure_time", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class ArchivedFile:
    image_name: str
    sensor: str
    instrument: str
    day_obs: str
    path: str
    byte_size: int
    checksum: str  # of the whole file, lowercase hex
    checksum_algorithm: str  # "adler32" or "md5" (cscs.camera.checksum)
    header_complete: bool
    missing_keywords: str
    daq_image: str  # provenance: where the pixels came from (DAQ endpoint and image)
    header_url: str  # "" when archived without a header
    header_md5: str
    software_version: str
    exposure_start_tai: float
    archived_tai: float
    header_source: str = ""
    """where the header came from: "" none, "live" collected during the exposure, "efd"
    rebuilt from the EFD afterwards (its HDRSRC)"""


_COLUMNS = [f.name for f in fields(ArchivedFile)]


@dataclass(frozen=True)
class Observation:
    """An image's header values that auto_qc and QC's catch-up decide on."""

    image_name: str
    image_type: str
    group_id: str
    filter: str
    band: str
    exposure_time: float


_OBSERVATION_COLUMNS = [f.name for f in fields(Observation)]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Catalog:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"cannot open the archive catalog at {_safe(url)}: {exc}") from exc
        try:
            if self.engine.dialect.name == "sqlite":
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            upgrade(self.engine, METADATA.create_all)
            _add_new_columns(self.engine)
        except (sa.exc.SQLAlchemyError, ValueError, OSError) as exc:
            self.engine.dispose()
            raise CatalogError(f"cannot open the archive catalog at {_safe(url)}: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def record(self, row: ArchivedFile) -> None:
        """Insert the file's row, or replace it (a header completed later)."""
        values = {name: getattr(row, name) for name in _COLUMNS}
        where = (FILES.c.image_name == row.image_name) & (FILES.c.sensor == row.sensor)
        upsert(self.engine, FILES, where, values, f"{row.image_name} {row.sensor}")

    def record_all(
        self, rows: Sequence[ArchivedFile], observations: Sequence[Observation] = ()
    ) -> None:
        """Insert or replace all of ``rows`` and ``observations`` in ONE transaction:
        all of them are recorded, or none (an image's files, recorded before any of
        them is given its name: docs/decisions/0040). CatalogError if the database
        refuses any."""
        images = sorted({r.image_name for r in rows})
        what = f"{len(rows)} files ({', '.join(images)})"
        try:
            with self.engine.begin() as connection:
                _insert_or_update_files(connection, images, rows)
                for seen in {o.image_name: o for o in observations}.values():
                    values = {name: getattr(seen, name) for name in _OBSERVATION_COLUMNS}
                    upsert_in(connection, OBSERVATIONS,
                              OBSERVATIONS.c.image_name == seen.image_name, values)  # fmt: skip
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"cannot record {what}: {exc}") from exc

    def record_observation(self, observation: Observation) -> None:
        """Insert or replace the image's query values (every file of it shares them)."""
        values = {name: getattr(observation, name) for name in _OBSERVATION_COLUMNS}
        where = OBSERVATIONS.c.image_name == observation.image_name
        upsert(self.engine, OBSERVATIONS, where, values, observation.image_name)

    def files_named(self, pairs: Collection[tuple[str, str]]) -> list[ArchivedFile]:
        """The rows of these (image, sensor) files, those the catalog has, in no order:
        what a job's selection in the repository is joined with (the catalog is the
        archive's truth: checksums, paths, provenance)."""
        wanted = set(pairs)
        images = sorted({image for image, _ in wanted})
        rows: list[ArchivedFile] = []
        for start in range(0, len(images), _IN_CHUNK):
            chunk = images[start : start + _IN_CHUNK]
            query = sa.select(*[FILES.c[n] for n in _COLUMNS]).where(FILES.c.image_name.in_(chunk))
            rows.extend(r for r in self._select(query) if (r.image_name, r.sensor) in wanted)
        return rows

    def observation(self, image: str) -> Observation | None:
        query = sa.select(*[OBSERVATIONS.c[n] for n in _OBSERVATION_COLUMNS]).where(
            OBSERVATIONS.c.image_name == image
        )
        try:
            with self.engine.connect() as connection:
                row = connection.execute(query).first()
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"cannot read the archive catalog: {exc}") from exc
        return Observation(**row._asdict()) if row is not None else None

    def lookup(self, image: str, sensor: str) -> ArchivedFile | None:
        where = (FILES.c.image_name == image) & (FILES.c.sensor == sensor)
        rows = self._select(sa.select(*[FILES.c[n] for n in _COLUMNS]).where(where))
        return rows[0] if rows else None

    def files_of(self, image: str) -> list[ArchivedFile]:
        query = sa.select(*[FILES.c[n] for n in _COLUMNS]).where(FILES.c.image_name == image)
        return self._select(query.order_by(FILES.c.sensor))

    def without_header(self) -> list[ArchivedFile]:
        query = sa.select(*[FILES.c[n] for n in _COLUMNS]).where(~FILES.c.header_complete)
        return self._select(query.order_by(FILES.c.exposure_start_tai))

    def files_after(
        self, instrument: str, after: tuple[float, str, str] | None, limit: int
    ) -> list[ArchivedFile]:
        """One page of the instrument's files, oldest exposure first: the ``limit``
        files after ``after`` (the last page's last ``(exposure_start_tai, image_name,
        sensor)``; None: from the first). How the OODS walks the whole catalog in
        bounded steps (keyset paging: each page costs the same however deep)."""
        query = sa.select(*[FILES.c[n] for n in _COLUMNS]).where(FILES.c.instrument == instrument)
        if after is not None:
            key = sa.tuple_(FILES.c.exposure_start_tai, FILES.c.image_name, FILES.c.sensor)
            query = query.where(key > sa.tuple_(*(sa.literal(v) for v in after)))
        order = (FILES.c.exposure_start_tai, FILES.c.image_name, FILES.c.sensor)
        return self._select(query.order_by(*order).limit(limit))

    def count(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(FILES)).scalar_one()
            )

    def _select(self, query: sa.Select[tuple[object, ...]]) -> list[ArchivedFile]:
        try:
            with self.engine.connect() as connection:
                return [ArchivedFile(**row._asdict()) for row in connection.execute(query)]
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"cannot read the archive catalog: {exc}") from exc


_IN_CHUNK = 500  # image names in one IN (...): well under every database's limit


class CatalogError(Exception):
    """The catalog database failed (unreachable, full, locked …)."""


def _insert_or_update_files(
    connection: sa.Connection, images: list[str], rows: Sequence[ArchivedFile]
) -> None:
    """Rows inserted, or replaced where the (image, sensor) has one, in three statements
    whatever their number (a select, then one of each sent as an ``executemany``): a
    statement per row costs more than the commit (benchmarks/catalog_transaction.py)."""
    there: set[tuple[str, str]] = set()
    for start in range(0, len(images), _IN_CHUNK):
        query = sa.select(FILES.c.image_name, FILES.c.sensor).where(
            FILES.c.image_name.in_(images[start : start + _IN_CHUNK])
        )
        there.update((image, sensor) for image, sensor in connection.execute(query))
    latest = {(r.image_name, r.sensor): r for r in rows}  # the last given of a file wins
    new = [_values(r) for key, r in latest.items() if key not in there]
    replacing = [
        {**_values(r), "key_image": r.image_name, "key_sensor": r.sensor}
        for key, r in latest.items()
        if key in there
    ]
    if new:
        connection.execute(sa.insert(FILES), new)
    if replacing:
        where = (FILES.c.image_name == sa.bindparam("key_image")) & (
            FILES.c.sensor == sa.bindparam("key_sensor")
        )
        connection.execute(sa.update(FILES).where(where), replacing)


def _values(row: ArchivedFile) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _COLUMNS}


def _sqlite_pragmas(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the archiver
    cursor.execute("PRAGMA synchronous=FULL")  # a recorded row survives a power cut
    cursor.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable URL>"


def upsert(
    engine: sa.Engine,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    values: dict[str, Any],
    what: str,
) -> None:
    """Replace the row ``where`` names, or insert it, in one transaction (every table of
    the catalog is written this way: a record made again replaces the last);
    CatalogError naming ``what`` if the database refuses."""
    try:
        with engine.begin() as connection:
            upsert_in(connection, table, where, values)
    except sa.exc.SQLAlchemyError as exc:
        raise CatalogError(f"cannot record {what}: {exc}") from exc


def upsert_in(
    connection: sa.Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    values: dict[str, Any],
) -> None:
    """:func:`upsert` within the caller's transaction."""
    if connection.execute(sa.update(table).where(where).values(values)).rowcount == 0:
        connection.execute(sa.insert(table).values(values))


def _add_new_columns(engine: sa.Engine) -> None:
    """Bring a catalog an earlier version made up to date: every column added since is
    nullable, so adding it (NULL for the rows already there: not measured) is the whole
    migration. A column this version no longer knows is left alone. Two processes may
    open the catalog at once (an archiver and OCSBatch): the one that finds the column
    added by the other between looking and adding carries on."""
    quote = engine.dialect.identifier_preparer.quote
    for table in METADATA.sorted_tables:
        for column in table.columns:
            if column.name in _columns_of(engine, table.name):
                continue
            if not column.nullable:
                raise sa.exc.InvalidRequestError(
                    f"table {table.name} lacks column {column.name}, which cannot be added"
                )
            kind = column.type.compile(dialect=engine.dialect)
            statement = f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}"
            try:
                with engine.begin() as connection:
                    connection.execute(sa.text(statement))
            except sa.exc.SQLAlchemyError:
                if column.name not in _columns_of(engine, table.name):
                    raise


def _columns_of(engine: sa.Engine, table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(engine).get_columns(table)}
