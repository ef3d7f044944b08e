"""The archive's catalog committed in groups, before files are named (ADR 0040): a crash
anywhere leaves, after the next start, every row's file whole under its name and no
file under its name without its row; a row the database refuses costs only its own
sensor. On SQLite and (broker tier) PostgreSQL, through the ``catalog_url`` fixture."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeoutError
from pathlib import Path

import numpy as np
import pytest

import cscs.archiver.store as store_module
from cscs.archiver.commits import GroupCommit
from cscs.archiver.recovery import temporaries
from cscs.archiver.store import ArchiveStore, ArchiveUnwritableError, Provenance
from cscs.camera.files import temporary_name
from cscs.camera.geometry import SEGMENT_COLS, SEGMENT_ROWS, SEGMENTS, Camera
from cscs.camera.verify import verify_raw_file
from cscs.catalog import ArchivedFile, Catalog, CatalogError, Observation
from cscs.daq.reader import SensorPixels

IMAGE = "CC_O_20261121_000007"
SENSORS = [d.name for d in Camera.COMCAM.detectors]
PROVENANCE = Provenance("tcp://daq", "test")


class Crash(BaseException):
    """The process dying at this point (nothing after it runs, no handler catches it)."""


def pixels(sensor: str = SENSORS[0], seed: int = 0) -> SensorPixels:
    rng = np.random.default_rng(seed)
    segments = tuple(
        rng.integers(0, 2**18, (SEGMENT_ROWS, SEGMENT_COLS), dtype=np.int32) for _ in SEGMENTS
    )
    return SensorPixels.trusted(IMAGE, sensor, segments)


def open_store(root: Path, url: str) -> tuple[ArchiveStore, int]:
    return ArchiveStore.open(root, Camera.COMCAM, catalog_url=url)


def crash_at(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    def dies(*_args: object, **_kwargs: object) -> None:
        raise Crash

    monkeypatch.setattr(target, name, dies)


def test_a_crash_between_commit_and_rename_is_rolled_forward_at_start(
    tmp_path: Path, catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit is the point of no return: the row survives, and so does the file."""
    store, _ = open_store(tmp_path / "archive", catalog_url)
    crash_at(monkeypatch, store_module, "publish")
    with pytest.raises(Crash):
        store.write(pixels(), None, PROVENANCE)
    store.close()
    monkeypatch.undo()
    path = store.path(IMAGE, SENSORS[0])
    assert not path.exists()
    assert len(temporaries(tmp_path / "archive")) == 1

    reopened, removed = open_store(tmp_path / "archive", catalog_url)
    try:
        assert (reopened.named_at_open, removed) == (1, 0)
        row = reopened.catalog.lookup(IMAGE, SENSORS[0])
        assert row is not None
        assert row.path == str(path)
        assert verify_raw_file(path, row.byte_size, row.checksum, "adler32") == []
        assert temporaries(tmp_path / "archive") == []
    finally:
        reopened.close()


def test_a_crash_before_the_commit_leaves_nothing_after_start(
    tmp_path: Path, catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = open_store(tmp_path / "archive", catalog_url)
    crash_at(monkeypatch, store.commits, "record")
    with pytest.raises(Crash):
        store.write(pixels(), None, PROVENANCE)
    store.close()
    monkeypatch.undo()
    assert len(temporaries(tmp_path / "archive")) == 1

    reopened, removed = open_store(tmp_path / "archive", catalog_url)
    try:
        assert (reopened.named_at_open, removed) == (0, 1)
        assert reopened.catalog.count() == 0
        assert list((tmp_path / "archive").rglob("*.fits")) == []
        assert temporaries(tmp_path / "archive") == []
    finally:
        reopened.close()


def test_a_rewrite_cut_after_its_commit_ends_as_the_new_file(
    tmp_path: Path, catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header completion (the file written again, its row replaced) stays atomic: the
    old file under the name and the new row is what a crash leaves, and start-up
    names the new file; cut before its commit, the old file and row stay."""
    store, _ = open_store(tmp_path / "archive", catalog_url)
    first = store.write(pixels(seed=1), None, PROVENANCE)
    crash_at(monkeypatch, store.commits, "record")  # cut before the commit
    with pytest.raises(Crash):
        store.write(pixels(seed=2), None, PROVENANCE)
    monkeypatch.undo()
    crash_at(monkeypatch, store_module, "publish")  # cut after it
    with pytest.raises(Crash):
        store.write(pixels(seed=3), None, PROVENANCE)
    store.close()
    monkeypatch.undo()

    reopened, removed = open_store(tmp_path / "archive", catalog_url)
    try:
        assert (reopened.named_at_open, removed) == (1, 1)
        row = reopened.catalog.lookup(IMAGE, SENSORS[0])
        assert row is not None
        assert row.checksum != first.checksum
        assert verify_raw_file(Path(row.path), row.byte_size, row.checksum, "adler32") == []
        back = reopened.read_back(row)
        assert np.array_equal(back.segments[0], pixels(seed=3).segments[0])
    finally:
        reopened.close()


def test_a_workers_temporary_is_named_and_earlier_attempts_removed(
    tmp_path: Path, catalog_url: str
) -> None:
    """The Dask path: the worker leaves its file under a temporary name; the archiver
    records it, names it, and removes what a killed attempt left beside it."""
    store, _ = open_store(tmp_path / "archive", catalog_url)
    try:
        written = store.files.write(pixels(), None, publish=False)
        assert written.temporary is not None
        assert written.temporary.exists()
        earlier = temporary_name(written.path)
        earlier.write_bytes(b"an attempt killed mid-write")
        row = store.record(IMAGE, SENSORS[0], written, None, PROVENANCE)
        assert verify_raw_file(written.path, row.byte_size, row.checksum, "adler32") == []
        assert temporaries(tmp_path / "archive") == []
    finally:
        store.close()


def test_a_temporary_not_made_for_its_path_is_not_recorded(
    tmp_path: Path, catalog_url: str
) -> None:
    store, _ = open_store(tmp_path / "archive", catalog_url)
    try:
        written = store.files.write(pixels(), None, publish=False)
        elsewhere = store.path(IMAGE, SENSORS[1])
        forged = dataclasses.replace(written, path=elsewhere)
        with pytest.raises(ArchiveUnwritableError, match="is not a temporary of"):
            store.record(IMAGE, SENSORS[1], forged, None, PROVENANCE)
        with pytest.raises(ArchiveUnwritableError, match="is not a temporary of"):
            store.record(IMAGE, SENSORS[1], written, None, PROVENANCE)  # another sensor's
        assert store.catalog.count() == 0
        assert not elsewhere.exists()
    finally:
        store.close()


def test_an_images_sensors_finished_together_share_one_transaction(
    tmp_path: Path, catalog_url: str
) -> None:
    """Sensors finishing while a commit is under way go in the next one, together;
    every file ends named, whole and recorded (four of ComCam's nine: 75 MB each)."""
    sensors = SENSORS[:4]
    store, _ = open_store(tmp_path / "archive", catalog_url)
    held, queued = threading.Event(), threading.Semaphore(0)
    record_all = store.catalog.record_all

    def first_held(rows: Sequence[ArchivedFile], observations: Sequence[Observation]) -> None:
        if not held.is_set():
            held.set()
            for _ in sensors[1:]:  # until every other sensor waits for the next commit
                assert queued.acquire(timeout=60)
        record_all(rows, observations)

    store.commits = GroupCommit(first_held, on_queued=queued.release)
    try:
        with ThreadPoolExecutor(len(sensors)) as threads:
            first = threads.submit(store.write, pixels(sensors[0]), None, PROVENANCE)
            assert held.wait(60)
            rest = [
                threads.submit(store.write, pixels(s, seed=n), None, PROVENANCE)
                for n, s in enumerate(sensors[1:], 1)
            ]
            rows = [first.result(60)] + [f.result(60) for f in rest]
        assert (store.commits.transactions, store.commits.rows) == (2, len(sensors))
        assert sorted(store.files_of(IMAGE), key=lambda r: r.sensor) == sorted(
            rows, key=lambda r: r.sensor
        )
        for row in rows:
            assert verify_raw_file(Path(row.path), row.byte_size, row.checksum, "adler32") == []
    finally:
        store.close()


def test_a_row_refused_costs_only_its_own_sensor(catalog_url: str) -> None:
    """A group with one row the database refuses (NOT NULL violated): the group's
    transaction fails whole, and each caller's rows are then committed on their own,
    so the other sensors of the image are recorded and only the bad one fails."""
    catalog = Catalog(catalog_url)
    entered, queued = threading.Event(), threading.Semaphore(0)
    calls: list[int] = []

    def held_first(rows: Sequence[ArchivedFile], observations: Sequence[Observation]) -> None:
        calls.append(len(rows))
        if len(calls) == 1:
            entered.set()
            for _ in SENSORS[1:]:
                assert queued.acquire(timeout=60)
        catalog.record_all(rows, observations)

    commits = GroupCommit(held_first, on_queued=queued.release)
    good = [row_of(sensor) for sensor in SENSORS]
    bad = dataclasses.replace(good[4], checksum=None)  # type: ignore[arg-type]
    try:
        with ThreadPoolExecutor(len(SENSORS)) as threads:
            futures = [threads.submit(commits.record, [good[0]], [])]
            assert entered.wait(60)
            others = [*good[1:4], bad, *good[5:]]
            futures += [threads.submit(commits.record, [r], []) for r in others]
            outcomes = [f.exception(60) for f in futures]
        assert calls[:2] == [1, len(SENSORS) - 1]  # the group was tried together first
        assert [type(e) for e in outcomes] == [type(None)] * 4 + [CatalogError] + [type(None)] * 4
        assert {r.sensor for r in catalog.files_of(IMAGE)} == set(SENSORS) - {SENSORS[4]}
    finally:
        catalog.close()


def test_record_all_is_one_transaction_all_or_nothing(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    try:
        rows = [row_of(sensor) for sensor in SENSORS]
        seen = Observation(IMAGE, "BIAS", "g", "empty", "", 0.0)
        catalog.record_all(rows, [seen, seen])  # an image's observation, once however given
        assert catalog.files_of(IMAGE) == sorted(rows, key=lambda r: r.sensor)
        assert catalog.observation(IMAGE) == seen
        replaced = [dataclasses.replace(r, checksum="ffffffff") for r in rows]
        replaced[-1] = dataclasses.replace(replaced[-1], path=None)  # type: ignore[arg-type]
        with pytest.raises(CatalogError, match=f"cannot record 9 files \\({IMAGE}\\)"):
            catalog.record_all(replaced)
        assert catalog.files_of(IMAGE) == sorted(rows, key=lambda r: r.sensor)  # none of it
        rewritten = [dataclasses.replace(r, checksum="ffffffff") for r in rows[:3]]
        catalog.record_all([*rewritten, row_of("R99_S99")])  # some replaced, one new
        assert {r.sensor: r.checksum for r in catalog.files_of(IMAGE)} == {
            **{r.sensor: r.checksum for r in rows}, **{r.sensor: "ffffffff" for r in rewritten},
            "R99_S99": "0a0b0c0d",
        }  # fmt: skip
    finally:
        catalog.close()


def row_of(sensor: str) -> ArchivedFile:
    return ArchivedFile(
        IMAGE, sensor, "LSSTComCam", "20261121", f"/archive/{IMAGE}_{sensor}.fits",
        100, "0a0b0c0d", "adler32", False, "header not received", f"tcp://daq {IMAGE}",
        "", "", "test", 1.0, 2.0,
    )  # fmt: skip


def test_a_store_opened_while_another_still_writes_leaves_its_temporary_alone(
    tmp_path: Path, catalog_url: str
) -> None:
    """A reconfiguration opens the archive again while a thread of the store it replaces
    still writes (its job cancelled, the thread not): the new store waits for it rather
    than judge its temporary a crash's, and the file ends whole, named and recorded."""
    store, _ = open_store(tmp_path / "archive", catalog_url)
    committing, go_on = threading.Event(), threading.Event()
    record_all = store.catalog.record_all

    def held(rows: Sequence[ArchivedFile], observations: Sequence[Observation]) -> None:
        committing.set()
        assert go_on.wait(60)
        record_all(rows, observations)

    store.commits = GroupCommit(held)
    with ThreadPoolExecutor(2) as threads:
        written = threads.submit(store.write, pixels(), None, PROVENANCE)
        assert committing.wait(60)
        opened = threads.submit(open_store, tmp_path / "archive", catalog_url)
        with pytest.raises(FuturesTimeoutError):  # waiting for the write
            opened.result(0.5)
        assert len(temporaries(tmp_path / "archive")) == 1
        go_on.set()
        row = written.result(60)
        reopened, removed = opened.result(60)
    store.close()
    try:
        assert (reopened.named_at_open, removed) == (0, 0)
        assert reopened.catalog.lookup(IMAGE, SENSORS[0]) == row
        assert verify_raw_file(Path(row.path), row.byte_size, row.checksum, "adler32") == []
    finally:
        reopened.close()
