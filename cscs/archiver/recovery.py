"""What a crash left in the archive, settled before the archiver writes again
(docs/decisions/0040).

A file is written whole and synced under a temporary name, recorded in the catalog,
and only then renamed: the commit is the point of no return. So at start a temporary
whose row the catalog holds, with the temporary's own size and checksum, is a file the
archiver had finished: it is given its name (rolled forward). Any other temporary was
never recorded (or was replaced by a later version of the same file) and is removed.
After this, every row names a file whole under its name, and no temporary is left.

Blocking (reads every temporary it names, lists the archive): run at open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cscs.camera.checksum import check_algorithm, file_checksum
from cscs.camera.files import final_name, publish
from cscs.catalog import ArchivedFile, Catalog

__all__ = ["Recovered", "recover", "temporaries"]


@dataclass(frozen=True)
class Recovered:
    named: int  # temporaries whose row was committed: renamed into place
    removed: int  # temporaries never recorded: deleted


def temporaries(root: Path) -> list[Path]:
    """Every temporary under ``root`` (hidden ``….partial`` files)."""
    return sorted(root.rglob(".*.partial"))


def recover(root: Path, catalog: Catalog) -> Recovered:
    """Roll forward the temporaries the catalog has committed, remove the others.
    CatalogError if the catalog cannot be read (nothing is removed on a guess: what
    was not looked at stays for the next open)."""
    named = removed = 0
    rows: dict[str, dict[str, ArchivedFile]] = {}  # image -> path -> row
    for temporary in temporaries(root):
        path = final_name(temporary)
        row = None
        if path is not None:
            image = path.parent.name
            if image not in rows:
                rows[image] = {r.path: r for r in catalog.files_of(image)}
            row = rows[image].get(str(path))
        if path is not None and row is not None and _holds(temporary, row):
            publish(temporary, path)
            named += 1
        else:
            temporary.unlink(missing_ok=True)
            removed += 1
    return Recovered(named, removed)


def _holds(temporary: Path, row: ArchivedFile) -> bool:
    """Whether ``temporary`` is the very file ``row`` records (size, then checksum)."""
    try:
        if temporary.stat().st_size != row.byte_size:
            return False
        algorithm = check_algorithm(row.checksum_algorithm)
        return file_checksum(algorithm, temporary) == row.checksum
    except (OSError, ValueError):
        return False
