"""One image's round of registration (blocking: the CSC runs it in a worker thread).

The catalog is the truth of what is archived: a round starts from the image's rows
there, never from what a message said. A sensor a prompt named that the catalog does
not hold is ignored (and reported); a row whose file is not inside the archive, or not
of this OODS's instrument, is refused (reported, retried: the catalog may be corrected).
Of the rest, the round registers the files asked for (prompted, or refused before) and
any the repository lacks, in one call; the headers read for that are returned, for
ConsDB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cscs.catalog import ArchivedFile, Catalog
from cscs.oods.ports import RegistryPort

__all__ = ["Registrar", "RoundOutcome"]


@dataclass(frozen=True)
class RoundOutcome:
    in_repository: set[str] = field(default_factory=set)
    """the image's sensors whose files the repository holds now"""
    registered: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """registered in this round: sensor → its primary header (for ConsDB)"""
    changed: set[str] = field(default_factory=set)
    """registered anew or with other values (not a redelivery)"""
    refused: dict[str, str] = field(default_factory=dict)
    """sensor → why it is not in the repository"""
    not_in_catalog: list[str] = field(default_factory=list)
    """sensors asked for that the catalog does not hold (a message not to be believed)"""


class Registrar:
    def __init__(
        self, catalog: Catalog, registry: RegistryPort, archive_root: Path, instrument: str
    ) -> None:
        self.catalog = catalog
        self.registry = registry
        self.archive_root = archive_root.resolve()
        self.instrument = instrument

    def trusted_path(self, row: ArchivedFile) -> tuple[Path | None, str]:
        """The row's file, if it may be registered; else None and why not."""
        if row.instrument != self.instrument:
            return None, f"catalogued as {row.instrument[:32]!r}, not {self.instrument}"
        try:
            path = Path(row.path).resolve()
        except (OSError, ValueError, RuntimeError) as exc:
            return None, f"its path cannot be resolved: {exc}"
        if not path.is_relative_to(self.archive_root):
            return None, f"{str(path)[:300]!r} is not inside the archive {self.archive_root}"
        return path, ""

    def round(self, image: str, asked: set[str]) -> RoundOutcome:
        """Register ``image``'s files: those ``asked`` for and those the repository
        lacks. CatalogError or StoreUnavailableError: nothing was done; try again."""
        rows = self.catalog.files_of(image)
        paths: dict[str, Path] = {}
        refused: dict[str, str] = {}
        for row in rows:
            path, why = self.trusted_path(row)
            if path is None:
                refused[row.sensor] = why
            else:
                paths[row.sensor] = path
        catalogued = {row.sensor for row in rows}
        not_in_catalog = sorted(asked - catalogued)
        held = self.registry.registered(paths.values())
        wanted = [p for s, p in sorted(paths.items()) if s in asked or p not in held]
        sensor_of = {path: sensor for sensor, path in paths.items()}
        registered: dict[str, Mapping[str, Any]] = {}
        changed: set[str] = set()
        if wanted:
            result = self.registry.register(wanted)
            for done in result.registered:
                sensor = sensor_of.get(done.path)
                if sensor is None:
                    continue  # not one asked for: a repository that says more than it did
                registered[sensor] = result.headers.get(done.path) or {}
                if done.changed:
                    changed.add(sensor)
            for path, reason in result.refused:
                if path in sensor_of:
                    refused[sensor_of[path]] = reason
        in_repository = {s for s, p in paths.items() if p in held} | set(registered)
        for sensor in in_repository:
            refused.pop(sensor, None)
        return RoundOutcome(in_repository, registered, changed, refused, not_in_catalog)

    def headers_of(self, image: str, sensors: set[str]) -> dict[str, Mapping[str, Any]]:
        """The primary headers of ``image``'s catalogued files among ``sensors`` (a
        ConsDB row retried: its headers read again)."""
        headers: dict[str, Mapping[str, Any]] = {}
        for row in self.catalog.files_of(image):
            path, _ = self.trusted_path(row)
            if path is not None and row.sensor in sensors:
                headers[row.sensor] = self.registry.header(path)
        return headers
