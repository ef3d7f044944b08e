"""What can go wrong with the repository, as its callers must tell apart."""

from __future__ import annotations

__all__ = ["QueryRefusedError", "RepositoryError"]


class RepositoryError(Exception):
    """The repository itself failed (its database down, locked or full, the archive root
    unwritable): nothing was done; try again later. The message names the cause."""


class QueryRefusedError(ValueError):
    """A data query the repository will not run as given: the message names what is
    wrong (its syntax and where, an unknown dimension or column, too many results)."""
