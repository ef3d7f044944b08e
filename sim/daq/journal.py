"""The camera's own record of what it took: one JSON line per image, appended (and
flushed to disk) as soon as the image's pixels are all in the DAQ buffer, before
``endReadout`` is announced.

Events on a bus can be lost with a broker; this file cannot. Whoever must account
for every image (the soak's reconciliation) starts from it, as an observatory starts
from the camera's own image log rather than from what DM says it received.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["TakenImage", "read_journal", "record_taken"]


@dataclass(frozen=True)
class TakenImage:
    imageName: str
    imageType: str
    sensors: tuple[str, ...]  # the image's, read out or not
    missing: tuple[str, ...]  # not read out (an injected `missing` fault)
    endReadoutTai: float


def journal_path(state_dir: Path, index: int) -> Path:
    return state_dir / f"Camera-{index}-images.jsonl"


def record_taken(path: Path, image: TakenImage) -> None:
    """Append one image, flushed and fsynced: the record survives a crash right after."""
    line = json.dumps(asdict(image), separators=(",", ":")) + "\n"
    with path.open("a", encoding="utf-8") as journal:
        journal.write(line)
        journal.flush()
        os.fsync(journal.fileno())


def read_journal(path: Path) -> list[TakenImage]:
    """Every image recorded, in order. A last line cut short by a crash is ignored;
    any other unreadable line is an error naming the file and line."""
    images: list[TakenImage] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return images
    for number, line in enumerate(lines, start=1):
        try:
            fields = json.loads(line)
            fields["sensors"] = tuple(fields["sensors"])
            fields["missing"] = tuple(fields["missing"])
            images.append(TakenImage(**fields))
        except (ValueError, TypeError, KeyError) as exc:
            if number == len(lines):
                break  # written as the camera died
            raise ValueError(f"{path}:{number}: not an image record ({exc})") from None
    return images
