"""Reconciliation: what the catalog holds and the OODS's stores lack, found in bounded
pages, oldest first, and handed to the CSC's usual work (so it is registered,
announced and retried like anything heard on the bus).

* **Files** (at ``enable``, and after each reconnection to the broker when
  ``imageArchived`` messages may have been missed: then only the files of exposures of
  the last ``reconnect_look_back`` s): the instrument's catalog files,
  ``page`` at a time, compared with the repository (``registered``); each image with
  files missing is handed on. The walk waits while the CSC's queue is full, so memory
  stays bounded however large the catalog.
* **Quick-look QC** (at ``enable`` and after each reconnection to the DM side): the
  images whose QC was measured since the last one recorded in ConsDB (a mark kept
  under the state directory; a first run looks back ``first_look_back`` s).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from cscs.catalog import BatchRecords, Catalog
from cscs.oods.registrar import Registrar

__all__ = ["QuicklookMark", "reconcile_files", "reconcile_quicklook"]

#: Hand on one image's missing files: (image, sensors); returns once there is room.
Found = Callable[[str, list[str]], Awaitable[None]]


async def reconcile_files(
    registrar: Registrar, page: int, found: Found, after: tuple[float, str, str] | None = None
) -> tuple[int, int]:
    """Walk the catalog (after ``after``: exposure start TAI, image, sensor; None: from
    the first); returns (files compared, files found missing)."""
    catalog, registry = registrar.catalog, registrar.registry
    compared = missing = 0
    while True:
        rows = await asyncio.to_thread(catalog.files_after, registrar.instrument, after, page)
        if not rows:
            return compared, missing
        last = rows[-1]
        after = (last.exposure_start_tai, last.image_name, last.sensor)
        paths = {row: registrar.trusted_path(row)[0] for row in rows}
        held = await asyncio.to_thread(registry.registered, [p for p in paths.values() if p])
        by_image: dict[str, list[str]] = {}
        for row, path in paths.items():
            if path is None or path not in held:  # untrusted ones too: refused, reported
                by_image.setdefault(row.image_name, []).append(row.sensor)
        compared += len(rows)
        for image, sensors in by_image.items():
            missing += len(sensors)
            await found(image, sensors)
        if len(rows) < page:
            return compared, missing


class QuicklookMark:
    """The last quick-look QC recorded in ConsDB: ``(measured_tai, image)``, in a small
    JSON file written atomically (a crash leaves the previous mark: a page recorded
    twice, which ConsDB's upsert makes harmless)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, default: tuple[float, str]) -> tuple[float, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return float(data["measured_tai"]), str(data["image"])[:64]
        except (OSError, ValueError, KeyError, TypeError):
            return default

    def save(self, mark: tuple[float, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"measured_tai": mark[0], "image": mark[1]}),
                             encoding="utf-8")  # fmt: skip
        temporary.replace(self.path)


async def reconcile_quicklook(
    catalog: Catalog,
    instrument: str,
    mark: QuicklookMark,
    first: tuple[float, str],
    page: int,
    record: Callable[[str], Awaitable[None]],
) -> int:
    """Record the QC of every image measured after the mark (``first`` when none), a
    page at a time, the mark moved after each page; returns the images recorded (a
    failure is the ``record``'s to retry: the walk goes on)."""
    records = BatchRecords(catalog)
    after = await asyncio.to_thread(mark.load, first)
    done = 0
    while True:
        images = await asyncio.to_thread(records.qc_measured_after, instrument, after, page)
        for _, image in images:
            await record(image)
        done += len(images)
        if images:
            after = images[-1]
            await asyncio.to_thread(mark.save, after)
        if len(images) < page:
            return done
