"""An archive's files registered in its Butler repository, as the OODS would register
them: for tests (and benchmarks) of what selects raws there (OCS Batch's data queries)
over an archive written straight to disk (:func:`~sim.testkit.simulated_archive`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from cscs.catalog import ArchivedFile
from cscs.repository import Repository

__all__ = ["register_in_repository"]


def register_in_repository(
    root: Path, rows: Iterable[ArchivedFile], registry_url: str = ""
) -> None:
    """Register these archived files, image by image, in the repository at ``root``
    (created if absent); AssertionError naming any file the repository refuses."""
    by_image: dict[str, list[Path]] = defaultdict(list)
    for row in rows:
        by_image[row.image_name].append(Path(row.path))
    repository = Repository.open(root, registry_url)
    try:
        for paths in by_image.values():
            registration = repository.register(paths)
            assert not registration.refused, f"the repository refused {registration.refused}"
    finally:
        repository.close()
