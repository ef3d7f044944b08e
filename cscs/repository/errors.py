"""What can go wrong with the repository, as its callers must tell apart."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy.exc

__all__ = [
    "ProductRefusedError",
    "QueryRefusedError",
    "RepositoryError",
    "failures_are_repository_errors",
]


class RepositoryError(Exception):
    """The repository itself failed (its database down, locked or full, the archive root
    unwritable): nothing was done; try again later. The message names the cause."""


class QueryRefusedError(ValueError):
    """A data query the repository will not run as given: the message names what is
    wrong (its syntax and where, an unknown dimension or column, too many results)."""


class ProductRefusedError(ValueError):
    """A product (calibration, QC) the repository will not take as given, until the input
    changes: an unknown kind, instrument or detector, an image not in the repository, a
    file already registered from elsewhere, metrics that are not plain values. The
    message names the cause; retrying the same call gives the same answer."""


@contextlib.contextmanager
def failures_are_repository_errors(doing: str) -> Iterator[None]:
    """The database's own failures (down, locked, full) as RepositoryError: retry later."""
    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise RepositoryError(f"{doing}: {type(exc).__name__}: {str(exc)[:300]}") from exc
