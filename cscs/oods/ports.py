"""What the OODS needs of the Butler repository and of ConsDB, as it uses them.

The CSC works through these two protocols: :mod:`cscs.oods.stores` adapts the real
libraries (``cscs.repository``, ``cscs.consdb``) to them, and the tests give small
fakes. Their failures come in two kinds, which the OODS treats differently: a file
refused (its header is wrong, its sensor unknown: that file, retried with back-off)
and the store itself failing (:class:`StoreUnavailableError`: everything waits and
is retried).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "ConsDbPort",
    "RegisteredPath",
    "RegistryPort",
    "RegistryResult",
    "StoreUnavailableError",
]


class StoreUnavailableError(Exception):
    """The repository or ConsDB itself failed (locked, down, full): nothing it was
    asked was done; try again later. The message names the cause."""


@dataclass(frozen=True)
class RegisteredPath:
    """A file now in the repository."""

    path: Path
    sensor: str
    changed: bool
    """new, or registered again with other header values (not a redelivery)"""


@dataclass(frozen=True)
class RegistryResult:
    registered: list[RegisteredPath] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    """files refused until they change, each with the reason"""
    headers: dict[Path, Mapping[str, Any]] = field(default_factory=dict)
    """the primary header of each registered file, as read once for registration"""


class RegistryPort(Protocol):
    """The Butler repository (blocking: called from a worker thread)."""

    def register(self, paths: Sequence[Path]) -> RegistryResult:
        """Register ``paths`` (files of one image), idempotently."""
        ...

    def registered(self, paths: Iterable[Path]) -> set[Path]:
        """Those of ``paths`` the repository holds."""
        ...

    def exposure_id(self, image: str) -> int: ...

    def header(self, path: Path) -> Mapping[str, Any]:
        """The file's primary header, as the repository reads it (OSError if it cannot
        be read)."""
        ...

    def close(self) -> None: ...


class ConsDbPort(Protocol):
    """ConsDB (blocking)."""

    def record_image(
        self, instrument: str, headers: Mapping[str, Mapping[str, Any]]
    ) -> Sequence[str]:
        """Upsert the image's exposure row and its files' ccdexposure rows (sensor →
        primary header); the warnings returned name each value left out and why."""
        ...

    def record_quicklook(
        self, instrument: str, image: str, qc: Mapping[str, Mapping[str, Any]]
    ) -> Sequence[str]:
        """Upsert the image's quick-look QC (sensor → the catalog's QC row); warnings
        as for :meth:`record_image`."""
        ...

    def close(self) -> None: ...
