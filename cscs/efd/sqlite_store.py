"""The embedded EFD store: one SQLite file (being written by the efd-store branch)."""

from __future__ import annotations

from pathlib import Path

from cscs.efd.memory import MemoryStore

__all__ = ["SqliteStore"]


class SqliteStore(MemoryStore):
    """Placeholder with the final signature until the SQLite store lands."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.url = f"sqlite:///{path}"
