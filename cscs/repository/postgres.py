"""A PostgreSQL registry: the URL the Butler needs, and the one extension it needs.

The Butler's PostgreSQL registry keeps timespans in exclusion constraints that need the
``btree_gist`` extension; it refuses to start without it. We create it when the
account may; otherwise the error says who must, and how.
"""

from __future__ import annotations

import sqlalchemy

from cscs.repository.errors import RepositoryError

__all__ = ["prepare_postgres", "registry_url"]


def registry_url(url: str) -> str:
    """``url`` with the driver the project installs (psycopg 3) when it names none:
    SQLAlchemy's default for ``postgresql://`` is psycopg2, which is not installed."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.partition("://")[2]
    return url


def prepare_postgres(url: str) -> None:
    """``btree_gist`` in the database of ``url`` (created if missing); RepositoryError
    naming what to do if it cannot be."""
    engine = sqlalchemy.create_engine(registry_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            present = connection.execute(
                sqlalchemy.text("SELECT count(*) FROM pg_extension WHERE extname = 'btree_gist'")
            ).scalar_one()
            if present:
                return
            try:
                connection.execute(sqlalchemy.text("CREATE EXTENSION IF NOT EXISTS btree_gist"))
            except sqlalchemy.exc.DBAPIError as exc:
                database = engine.url.database
                said = (
                    str(exc.orig).strip().splitlines()[0][:200] if exc.orig else type(exc).__name__
                )
                raise RepositoryError(
                    f"the Butler registry needs PostgreSQL's btree_gist extension in database "
                    f"{database!r}, and this account cannot create it ({said}): a superuser "
                    f"(or the database's owner) must run `CREATE EXTENSION btree_gist;` in "
                    f"{database!r}"
                ) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        raise RepositoryError(
            f"cannot reach the registry database {shown}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    finally:
        engine.dispose()
