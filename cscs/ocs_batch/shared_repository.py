"""The archive's repository as OCS Batch shares it between worker threads: data queries
(``execute``), QC's catch-up and the products' registration each call it from
``asyncio.to_thread``, and a :class:`~cscs.repository.Repository` (a Butler) is used by
one thread at a time. So every call holds one lock: calls are short (a query, one
product), and a second Butler per caller would be a second connection pool and cache
for the same registry."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from cscs.repository import RawRef, RegisteredCalibration, Repository, RepositoryError

__all__ = ["RepositoryCalls", "SharedRepository"]


class RepositoryCalls(Protocol):
    """What OCS Batch calls of the repository (a Repository, or one shared)."""

    def query_raws(
        self, where: str, *, bind: Mapping[str, object] | None = None, limit: int
    ) -> list[RawRef]: ...

    def registered(self, paths: Iterable[Path]) -> set[Path]: ...

    def register_calibration(
        self, kind: str, instrument: str, sensor: str, path: Path, *, job_id: str,
        valid_from_tai: float,
    ) -> RegisteredCalibration: ...  # fmt: skip

    def record_qc(
        self, instrument: str, image_name: str, sensor: str, metrics: Mapping[str, Any]
    ) -> bool: ...


class SharedRepository:
    """A Repository behind one lock; closed once, after any call under way."""

    def __init__(self, repository: Repository) -> None:
        self._repository = repository
        self._lock = threading.Lock()
        self._closed = False

    def _open(self) -> Repository:
        """The repository, for a call holding the lock; RepositoryError once closed."""
        if self._closed:
            raise RepositoryError("the repository is closed (OCSBatch is stopping)")
        return self._repository

    def query_raws(
        self, where: str, *, bind: Mapping[str, object] | None = None, limit: int
    ) -> list[RawRef]:
        with self._lock:
            return self._open().query_raws(where, bind=bind, limit=limit)

    def registered(self, paths: Iterable[Path]) -> set[Path]:
        with self._lock:
            return self._open().registered(paths)

    def register_calibration(
        self, kind: str, instrument: str, sensor: str, path: Path, *, job_id: str,
        valid_from_tai: float,
    ) -> RegisteredCalibration:  # fmt: skip
        with self._lock:
            return self._open().register_calibration(
                kind, instrument, sensor, path, job_id=job_id, valid_from_tai=valid_from_tai
            )

    def record_qc(
        self, instrument: str, image_name: str, sensor: str, metrics: Mapping[str, Any]
    ) -> bool:
        with self._lock:
            return self._open().record_qc(instrument, image_name, sensor, metrics)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._repository.close()
