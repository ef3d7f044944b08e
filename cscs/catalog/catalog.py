"""The archive catalog (the seeds' "Data Backbone" database): one row per archived file.

SQLAlchemy Core, so the same code runs on SQLite (the default: a file inside the
archive, nothing to install) and PostgreSQL (production: give a
``postgresql+psycopg://…`` URL). Calls are synchronous; the archiver runs them in worker
threads. A row is written after its file is complete under its final name, so the
catalog never lists a file that is not whole; a file without its row is found again by
catch-up, which checks the file before trusting it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import sqlalchemy as sa

__all__ = ["ArchivedFile", "Catalog", "sqlite_url"]

_METADATA = sa.MetaData()
FILES = sa.Table(
    "archived_files",
    _METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_name", sa.String(64), nullable=False, index=True),
    sa.Column("sensor", sa.String(16), nullable=False),
    sa.Column("instrument", sa.String(32), nullable=False),
    sa.Column("day_obs", sa.String(8), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("byte_size", sa.BigInteger, nullable=False),
    sa.Column("md5", sa.String(32), nullable=False),
    sa.Column("header_complete", sa.Boolean, nullable=False),
    sa.Column("missing_keywords", sa.Text, nullable=False),
    sa.Column("daq_image", sa.Text, nullable=False),
    sa.Column("header_url", sa.Text, nullable=False),
    sa.Column("header_md5", sa.String(32), nullable=False),
    sa.Column("software_version", sa.String(32), nullable=False),
    sa.Column("exposure_start_tai", sa.Float, nullable=False),
    sa.Column("archived_tai", sa.Float, nullable=False),
    sa.UniqueConstraint("image_name", "sensor", name="one_file_per_sensor"),
)


@dataclass(frozen=True)
class ArchivedFile:
    image_name: str
    sensor: str
    instrument: str
    day_obs: str
    path: str
    byte_size: int
    md5: str
    header_complete: bool
    missing_keywords: str
    daq_image: str  # provenance: where the pixels came from (DAQ endpoint and image)
    header_url: str  # "" when archived without a header
    header_md5: str
    software_version: str
    exposure_start_tai: float
    archived_tai: float


_COLUMNS = [f.name for f in fields(ArchivedFile)]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Catalog:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
            if self.engine.dialect.name == "sqlite":
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            _METADATA.create_all(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"cannot open the archive catalog at {_safe(url)}: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def record(self, row: ArchivedFile) -> None:
        """Insert the file's row, or replace it (a header completed later)."""
        values = {name: getattr(row, name) for name in _COLUMNS}
        where = (FILES.c.image_name == row.image_name) & (FILES.c.sensor == row.sensor)
        try:
            with self.engine.begin() as connection:
                updated = connection.execute(sa.update(FILES).where(where).values(values))
                if updated.rowcount == 0:
                    connection.execute(sa.insert(FILES).values(values))
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"cannot record {row.image_name} {row.sensor}: {exc}") from exc

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


class CatalogError(Exception):
    """The catalog database failed (unreachable, full, locked …)."""


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
