"""The real stores behind the OODS's ports: the archive's Butler repository
(:mod:`cscs.repository`) and ConsDB (:mod:`cscs.consdb`), their failures turned into
the one the OODS retries (:class:`~cscs.oods.ports.StoreUnavailableError`).

Both are blocking and called from worker threads; each store is used by one thread at
a time (a lock: the work loop and a reconciliation may ask at once). The headers handed
to ConsDB are read as the repository reads them (``read_primary_header``: the primary
HDU only), right after it registered the files.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cscs.consdb import ConsDb, ConsDbError
from cscs.oods.interface import OodsConfig
from cscs.oods.ports import (
    ConsDbPort,
    RegisteredPath,
    RegistryPort,
    RegistryResult,
    StoreUnavailableError,
)
from cscs.repository import Repository, RepositoryError, exposure_id
from cscs.repository.repository import read_primary_header

__all__ = ["ConsDbStore", "RepositoryStore", "open_stores"]


class RepositoryStore:
    def __init__(self, repository: Repository) -> None:
        self._repository = repository
        self._lock = threading.Lock()

    def register(self, paths: Sequence[Path]) -> RegistryResult:
        with self._lock:
            try:
                registration = self._repository.register(paths)
            except RepositoryError as exc:
                raise StoreUnavailableError(str(exc)) from exc
        result = RegistryResult(refused=list(registration.refused))
        for done in registration.registered:
            result.registered.append(RegisteredPath(done.path, done.sensor, done.changed))
            try:
                result.headers[done.path] = read_primary_header(done.path)
            except OSError:  # gone since: ConsDB's row waits for the next registration
                continue
        return result

    def registered(self, paths: Iterable[Path]) -> set[Path]:
        with self._lock:
            try:
                return self._repository.registered(paths)
            except RepositoryError as exc:
                raise StoreUnavailableError(str(exc)) from exc

    def exposure_id(self, image: str) -> int:
        return exposure_id(image)

    def header(self, path: Path) -> Mapping[str, Any]:
        return read_primary_header(path)

    def close(self) -> None:
        with self._lock:
            self._repository.close()


class ConsDbStore:
    def __init__(self, consdb: ConsDb) -> None:
        self._consdb = consdb
        self._lock = threading.Lock()

    def record_image(
        self, instrument: str, headers: Mapping[str, Mapping[str, Any]]
    ) -> Sequence[str]:
        with self._lock:
            try:
                return self._consdb.record_image(instrument, headers)
            except ConsDbError as exc:
                raise StoreUnavailableError(str(exc)) from exc

    def record_quicklook(
        self, instrument: str, image: str, qc: Mapping[str, Mapping[str, Any]]
    ) -> Sequence[str]:
        with self._lock:
            try:
                return self._consdb.record_quicklook(instrument, image, qc)
            except ConsDbError as exc:
                raise StoreUnavailableError(str(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._consdb.close()


def open_stores(config: OodsConfig, root: Path) -> tuple[RegistryPort, ConsDbPort]:
    """The repository in the archive and ConsDB, as the configuration names them."""
    try:
        repository = Repository.open(root, config.registry_url)
    except RepositoryError as exc:
        raise StoreUnavailableError(str(exc)) from exc
    try:
        consdb = ConsDb.open(config.consdb_url, archive_root=root)
    except ConsDbError as exc:
        repository.close()
        raise StoreUnavailableError(str(exc)) from exc
    return RepositoryStore(repository), ConsDbStore(consdb)
