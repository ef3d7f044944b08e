"""The page's own look at an archived image: each file re-read and verified, the
quick-look header values, and the preview drawn from the same files.

The night staff's "verified" column means what it says: the dashboard read the file
back from the archive with the one verifier the project has
(:func:`cscs.camera.verify.verify_raw_file`: size, the announced checksum, every HDU's
FITS checksums), not that the archiver said so. Runs in a worker thread, one image at a
time; pure apart from reading the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import fitsio

from cscs.camera.checksum import Algorithm
from cscs.camera.geometry import Camera
from cscs.camera.verify import verify_raw_file
from cscs.dashboard.preview import Preview, render_preview

__all__ = ["ArchivedFile", "ImageCheck", "check_image", "path_in_archive"]

#: Primary-header keywords the table shows next to the QC (docs/raw-format.md).
QUICK_LOOK_KEYWORDS = ("FILTER", "AIRMASS", "EXPTIME", "IMGTYPE", "OBJECT")


@dataclass(frozen=True)
class ArchivedFile:
    sensor: str
    path: Path
    byte_size: int
    checksum: str
    algorithm: Algorithm


@dataclass(frozen=True)
class ImageCheck:
    problems: dict[str, str]  # sensor -> "" (whole) or what is wrong
    header: dict[str, Any]
    preview: Preview | None


def path_in_archive(url: str, archive_root: Path) -> Path | None:
    """The file an announcement's ``file://`` URL names, if it lies inside the archive
    (symlinks resolved); None otherwise. Anyone can announce any URL: the page reads
    only what is under the archive it was told to show."""
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    try:
        path = Path(unquote(parsed.path)).resolve()
        root = archive_root.resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return path if path.is_relative_to(root) and path != root else None


def _quick_look(path: Path) -> dict[str, Any]:
    header = fitsio.read_header(str(path), ext=0)
    values: dict[str, Any] = {}
    for keyword in QUICK_LOOK_KEYWORDS:
        value = header.get(keyword)
        if isinstance(value, str):
            values[keyword] = value.strip()[:40]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values[keyword] = float(value) if abs(value) < 1e30 else None
    return values


def check_image(files: Mapping[str, ArchivedFile], camera: Camera) -> ImageCheck:
    """Verify every file; take the quick-look values from the first whole one; draw the
    preview from the whole ones (a damaged file is named, never drawn)."""
    problems: dict[str, str] = {}
    whole: list[Path] = []
    for sensor, file in sorted(files.items()):
        try:
            found = verify_raw_file(file.path, file.byte_size, file.checksum, file.algorithm)
        except Exception as exc:  # the verifier names the file; anything else: say what
            found = [f"{file.path.name}: could not be read: {type(exc).__name__}: {exc}"]
        problems[sensor] = "; ".join(found)[:500]
        if not found:
            whole.append(file.path)
    header: dict[str, Any] = {}
    if whole:
        try:
            header = _quick_look(whole[0])
        except Exception:  # verified a moment ago: only a file replaced since could fail
            header = {}
    preview = render_preview(whole, camera) if whole else None
    return ImageCheck(problems, header, preview)
