"""The night's account: the catalog read against the cameras' journals, any file the
soak did not hear announced verified now, the reconciliation printed (table, each
shortfall explained, faults, FAULTs, alarms) and returned for the JSON file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TextIO

from cscs.camera.checksum import check_algorithm
from cscs.camera.verify import verify_raw_file
from cscs.catalog import ArchivedFile, Catalog, sqlite_url
from cscs.catalog.batch import BatchRecords
from cscs.ocs_batch.catch_up import CATCH_UP
from sim.daq.journal import TakenImage, journal_path, read_journal
from sim.site.soak.plan import FaultPlan
from sim.site.soak.reconcile import REBUILT, FaultWindow, SensorFile, reconcile, table
from sim.site.soak.record import NightRecord, Verified, header_source
from sim.site.soak.site import CAMERAS

__all__ = ["account", "catalogued_source"]


async def account(
    state: Path,
    plan: FaultPlan,
    record: NightRecord,
    windows: list[FaultWindow],
    commanded: dict[str, int],
    out: TextIO,
) -> dict[str, Any]:
    """``commanded``: how many images the night's loops took of each camera, which its
    journal must list."""
    taken = {c.instrument: read_journal(journal_path(state, c.value)) for c in CAMERAS}
    for camera, count in commanded.items():
        if len(taken.get(camera, [])) != count:
            record.problems.append(f"{camera}: {count} images taken, its journal lists "
                                   f"{len(taken.get(camera, []))}")  # fmt: skip
    files, measured, caught_up = await asyncio.to_thread(_from_catalog, state, taken, record)
    stray = await asyncio.to_thread(_stray_files, state / "archive", files)
    result = reconcile(
        plan.seed, taken, files,
        {key: v.checksum for key, v in record.verified.items()},
        record.announced, measured, record.stages, record.forwarded, windows, caught_up,
    )  # fmt: skip
    result.duplicated += [f"{path}: a file in no catalog row" for path in stray]
    result.counts["all"]["duplicated"] += len(stray)
    print("\n" + table(result), file=out)
    print("(images, whole; lost and duplicated: files. verified: every file re-read, FITS "
          "checksums and file checksum matched)", file=out)  # fmt: skip
    for line in result.lines:
        print(f"  explained: {line}", file=out)
    for line in result.unexplained + record.problems:
        print(f"  PROBLEM: {line}", file=out)
    print(f"faults injected: {len(windows)}", file=out)
    for window in windows:
        print(f"  {window.kind.value:<20} {window.target:<28} "
              f"{window.end_tai - window.start_tai:6.1f} s  {window.note}", file=out)  # fmt: skip
    for fault in record.faults_seen:
        print(f"  FAULT of {fault['csc']}: {fault.get('report', '?')}; recovered after "
              f"{fault.get('recoveredAfter', 'never')} s", file=out)  # fmt: skip
    for alarm in record.alarms.values():
        print(f"  alarm {alarm.name}: raised {alarm.raised} times, worst {alarm.max_severity} "
              f"({alarm.reason[:80]}), {'cleared' if alarm.cleared else 'NOT cleared'}",
              file=out)  # fmt: skip
    return {
        **result.as_dict(),
        "ok": result.ok and not record.problems,
        "faults": [w.as_dict() for w in windows],
        "faultStates": record.faults_seen,
        "alarms": [a.as_dict() for a in record.alarms.values()],
        "problems": record.problems,
    }


def _from_catalog(
    state: Path, taken: dict[str, list[TakenImage]], record: NightRecord
) -> tuple[dict[tuple[str, str], SensorFile], set[str], set[str]]:
    """Each taken image's catalogued files (a file not yet verified is verified now),
    the images with QC in the catalog, and those of them a ``qc_catch_up`` job
    measured."""
    catalog = Catalog(sqlite_url(state / "archive" / "catalog.sqlite"))
    try:
        records = BatchRecords(catalog)
        files: dict[tuple[str, str], SensorFile] = {}
        measured, caught_up = set(), set()
        for images in taken.values():
            for image in images:
                rows = catalog.files_of(image.imageName)
                for row in rows:
                    key = (row.image_name, row.sensor)
                    count = sum(1 for r in rows if r.sensor == row.sensor)
                    known = record.verified.get(key)
                    if known is None or known.checksum != row.checksum:
                        known = _verify_now(row, record)
                    source = known.header_source if known is not None else ""
                    source = source or catalogued_source(row)
                    files[key] = SensorFile(row.path, row.checksum, row.header_complete,
                                            row.missing_keywords, count, source)  # fmt: skip
                origins = records.qc_origins(image.imageName)
                if origins:
                    measured.add(image.imageName)
                if CATCH_UP in origins:
                    caught_up.add(image.imageName)
        return files, measured, caught_up
    finally:
        catalog.close()


def catalogued_source(row: ArchivedFile) -> str:
    """Where the catalog says the file's header came from (its ``header_source``, in
    catalogs that record it: ``efd`` for a header rebuilt from the EFD), as HDRSRC
    says it; "" when it does not say."""
    recorded = str(getattr(row, "header_source", "") or "")
    return REBUILT if recorded.lower() == REBUILT.lower() else recorded


def _stray_files(archive: Path, files: dict[tuple[str, str], SensorFile]) -> list[str]:
    """Files in the archive that no catalog row of the night names: a second copy of a
    sensor written elsewhere, or one left half-written (pruned files are gone, so
    what is left is what the soak never heard of)."""
    known = {row.path for row in files.values()}
    return sorted(str(p) for p in archive.rglob("*.fits*") if str(p) not in known)


def _verify_now(row: ArchivedFile, record: NightRecord) -> Verified | None:
    path = Path(row.path)
    algorithm = check_algorithm(row.checksum_algorithm)
    problems = verify_raw_file(path, row.byte_size, row.checksum, algorithm)
    if problems:
        record.problems += [f"{row.image_name} {row.sensor} (catalogued): {p}" for p in problems]
        return None
    key = (row.image_name, row.sensor)
    record.verified[key] = Verified(path, row.checksum, row.header_complete, 0.0,
                                    header_source=header_source(path))  # fmt: skip
    return record.verified[key]
