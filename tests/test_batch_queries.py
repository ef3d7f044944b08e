"""OCS Batch's data queries in Butler syntax (issue 31): a ``dataQuery`` is a Butler
``where`` expression with bind values, evaluated by the Butler over the archive's
repository, its raws joined with the catalog's rows; what the Butler refuses, and what
the catalog does not hold as the repository does, fails ``execute`` naming the cause.
Auto QC starts on the OODS's ``imageInOODS`` with a query of bind values only.

Over real simulated raws registered in a real SQLite repository by the repository
library, as the OODS registers them; the CSC runs on the in-memory bus with an engine
that hands each task back in-process (tests/test_ocs_batch.py runs such jobs on Dask
over Mosquitto).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cscs.camera.geometry import Camera
from cscs.camera.naming import ImageName
from cscs.catalog import ArchivedFile, Catalog, sqlite_url
from cscs.cluster import Engine
from cscs.core.protocol import Ack, AckCode, encode
from cscs.core.testing import MemoryBroker, enabled_csc
from cscs.core.testing.harness import CscHarness
from cscs.ocs_batch.auto_qc import qc_request
from cscs.ocs_batch.csc import OcsBatchCsc
from cscs.ocs_batch.selection import MAX_BIND_VALUES, parse_bind, select_files
from cscs.repository import Repository, detector_id, exposure_id
from sim.testkit import SimulatedExposure, register_in_repository, simulated_archive
from tests.support.batch_engine import InProcessEngine

SENSORS = ["R22_S00", "R22_S11"]
# Sequence numbers 1 … 6 of 20261121.
EXPOSURES = [SimulatedExposure("BIAS"), SimulatedExposure("BIAS"), SimulatedExposure("DARK", 1.0),
             SimulatedExposure("OBJECT", 1.0), SimulatedExposure("OBJECT", 1.0),
             SimulatedExposure("OBJECT", 1.0, band="g")]  # fmt: skip
ALL = [(n, s) for n in range(1, 7) for s in SENSORS]


@dataclass
class Archive:
    root: Path
    rows: list[ArchivedFile]
    repository: Repository
    catalog: Catalog

    def select(self, where: str, limit: int = 100, /, **bind: Any) -> list[tuple[int, str]]:
        """(sequence number, detector) of each file selected, in the order given."""
        files = select_files(self.repository, self.catalog, where, bind, limit)
        return [(ImageName.parse(f.image_name).seq_num, f.sensor) for f in files]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    root = tmp_path_factory.mktemp("queries") / "archive"
    rows = simulated_archive(root, Camera.COMCAM, EXPOSURES, SENSORS)
    register_in_repository(root, rows)
    repository = Repository.open(root)
    catalog = Catalog(sqlite_url(root / "catalog.sqlite"))
    try:
        yield Archive(root, rows, repository, catalog)
    finally:
        catalog.close()
        repository.close()


# ---- what a query selects -------------------------------------------------------------


def test_a_range_of_sequence_numbers_oldest_first(archive: Archive) -> None:
    where = "instrument = 'LSSTComCam' AND exposure.day_obs = 20261121 "
    where += " AND exposure.seq_num IN (2..4)"
    assert archive.select(where) == [(n, s) for n in (2, 3, 4) for s in SENSORS]
    assert archive.select("exposure.seq_num > 4 AND exposure.seq_num <= 6") == ALL[8:]


def test_image_types_in_a_list(archive: Archive) -> None:
    assert archive.select("exposure.observation_type IN ('bias', 'dark')") == ALL[:6]
    assert archive.select("NOT exposure.observation_type IN ('bias', 'dark')") == ALL[6:]


def test_one_detector_by_number_and_by_name(archive: Archive) -> None:
    number = detector_id("LSSTComCam", "R22_S11")
    expected = [(n, "R22_S11") for n in range(1, 7)]
    assert archive.select(f"instrument = 'LSSTComCam' AND detector = {number}") == expected
    assert archive.select("detector.full_name = 'R22_S11'") == expected


def test_filters_bands_and_an_exposure_id(archive: Archive) -> None:
    assert archive.select("band = 'g'") == ALL[10:]
    exposure = exposure_id("CC_O_20261121_000003")
    assert archive.select(f"exposure = {exposure} AND detector = 0") == [(3, "R22_S00")]


def test_bind_values_for_text_numbers_ranges_and_lists(archive: Archive) -> None:
    where = ("instrument = inst AND exposure.seq_num >= first AND exposure.seq_num <= last "
             "AND detector IN (dets) AND exposure.observation_type = kind")  # fmt: skip
    found = archive.select(where, inst="LSSTComCam", first=3, last=6, dets=[0], kind="object")
    assert found == [(4, "R22_S00"), (5, "R22_S00"), (6, "R22_S00")]
    # A value never becomes text of the query: quotes in it are only characters.
    assert archive.select("instrument = inst", inst="LSSTComCam' OR 'a' = 'a") == []


def test_auto_qcs_own_query_is_bind_values_only(archive: Archive) -> None:
    request = qc_request("CC_O_20261121_000004", ["R22_S11"])
    assert "CC_O" not in request.dataQuery
    assert "4" not in request.dataQuery
    bind = parse_bind(json.loads(request.config)["bind"])
    assert archive.select(request.dataQuery, **bind) == [(4, "R22_S11")]
    whole = qc_request("CC_O_20261121_000004", [])
    assert archive.select(whole.dataQuery, **parse_bind(json.loads(whole.config)["bind"])) == [
        (4, "R22_S00"), (4, "R22_S11")
    ]  # fmt: skip


# ---- what is refused, and why ---------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "bind", "limit", "reason"),
    [
        ("instrument = 'LSSTComCam' AND", {}, 100, "syntax error"),
        ("0", {}, 100, "not a condition"),
        ("exposure.seq_num IN (1..", {}, 100, "exposure.seq_num"),
        ("exposure.colour = 'red'", {}, 100, "colour"),
        ("telescope = 'AuxTel'", {}, 100, "telescope"),
        ("detector IN (dets)", {}, 100, "dets"),
        ("instrument = 'LSSTComCam'", {}, 5, "5"),
        ("   ", {}, 100, "the data query is empty"),
        ("detector IN (dets)", {"dets": [0, "R22_S00"]}, 100, "bind"),
    ],
)
def test_a_query_the_butler_cannot_evaluate_is_refused_naming_the_cause(
    archive: Archive, where: str, bind: dict[str, Any], limit: int, reason: str
) -> None:
    with pytest.raises(ValueError, match=r".") as refused:
        archive.select(where, limit, **bind)
    assert reason.lower() in str(refused.value).lower()


def test_a_raw_the_catalog_does_not_hold_as_the_repository_does_is_refused(
    archive: Archive, tmp_path: Path
) -> None:
    other = Catalog(sqlite_url(tmp_path / "catalog.sqlite"))  # the catalog is the truth
    try:
        for row in archive.rows:
            if ImageName.parse(row.image_name).seq_num == 2:
                other.record(replace(row, path=row.path.replace(".fits", "_moved.fits")))
            elif row.sensor != "R22_S11" or ImageName.parse(row.image_name).seq_num != 1:
                other.record(row)
        where = "exposure.seq_num IN (1, 2)"
        with pytest.raises(ValueError, match="not in the archive catalog") as missing:
            select_files(archive.repository, other, where, {}, 100)
        assert "CC_O_20261121_000001 R22_S11" in str(missing.value)
        with pytest.raises(ValueError, match="under another path") as moved:
            select_files(archive.repository, other, "exposure.seq_num = 2", {}, 100)
        assert "_moved.fits" in str(moved.value)
        assert len(select_files(archive.repository, other, "exposure.seq_num = 3", {}, 9)) == 2
    finally:
        other.close()


_HOSTILE = st.one_of(
    st.text(max_size=120),
    st.lists(st.sampled_from([
        "'", '"', ";", "--", "/*", "*/", "(", ")", "..", ",", " OR ", " AND ", "NOT ", "=",
        "1", "x", "instrument", "exposure.seq_num", "DROP TABLE dataset;", "\\", "\x00",
        "'; DELETE FROM archived_files; --", "IN", "%", "\n", "detector", ":dets", "\u202e",
    ]), max_size=20).map("".join),
)  # fmt: skip


@given(where=_HOSTILE)
def test_a_hostile_query_selects_what_it_says_or_is_refused_and_harms_nothing(
    archive: Archive, where: str
) -> None:
    found: list[tuple[int, str]] | str
    try:
        found = archive.select(where, 100, dets=[0, 4])
    except ValueError as exc:
        found = str(exc)
    if isinstance(found, str):
        assert found  # the reason is said
    else:
        assert set(found) <= set(ALL)
    assert archive.catalog.count() == len(ALL)
    assert len(archive.select("instrument = 'LSSTComCam'")) == len(ALL)


# ---- bind values from the bus ---------------------------------------------------------


def test_bind_values_are_checked_where_they_are_parsed() -> None:
    good = {"inst": "LATISS", "n": 3, "x": 1.5, "dets": [0, 4], "names": ["a", "b"]}
    assert parse_bind(good) == good
    assert parse_bind(None) == {}
    for bad, reason in [
        ([1], "JSON object"), ({"a b": 1}, "not an identifier"), ({"x": True}, "bool"),
        ({"x": None}, "NoneType"), ({"x": {"y": 1}}, "dict"), ({"x": [[1]]}, "list"),
        ({"x": []}, "empty list"), ({"x": "a" * 201}, "200 characters"),
        ({"x": "a\nb"}, "control character"), ({"x": float("nan")}, "finite"),
        ({"x": 2**70}, "64 bits"), ({f"n{i}": 1 for i in range(21)}, "at most 20"),
        ({"x": list(range(MAX_BIND_VALUES + 1))}, f"more than {MAX_BIND_VALUES}"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=reason):
            parse_bind(bad)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20,
)  # fmt: skip


@given(value=_JSON)
def test_any_json_is_bind_values_or_a_reason(value: object) -> None:
    reason = "bind"
    try:
        bind = parse_bind(value)
    except ValueError as exc:
        bind, reason = {}, str(exc)
    assert reason.startswith("bind")
    for item in bind.values():
        for scalar in item if isinstance(item, list) else [item]:
            assert isinstance(scalar, str | int | float)
            assert not isinstance(scalar, bool)


# ---- through OCSBatch:0 ---------------------------------------------------------------


@dataclass
class Batch:
    harness: CscHarness
    engine: InProcessEngine

    async def execute(self, pipeline: str, where: str, **config: Any) -> Ack:
        params = {"pipeline": pipeline, "dataQuery": where, "config": json.dumps(config)}
        return await self.harness.remote.command("execute", params, timeout=60, check=False)


@contextlib.asynccontextmanager
async def batch(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **config: Any
) -> AsyncIterator[Batch]:
    engine = InProcessEngine(broken=set(), gate=None)

    async def start(*args: Any) -> InProcessEngine:
        return engine

    monkeypatch.setattr(Engine, "start", start)
    values = {"archive_root": str(archive.root), "reference_catalog": str(tmp_path),
              "auto_qc_catch_up": False} | config  # fmt: skip
    async with enabled_csc(OcsBatchCsc, MemoryBroker(), tmp_path, "q", values) as harness:
        yield Batch(harness, engine)


async def test_execute_runs_a_butler_query_and_refuses_a_malformed_one_with_the_reason(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with batch(archive, tmp_path, monkeypatch) as site:
        final = await site.execute(
            "image-qc",
            "exposure.seq_num >= first AND exposure.seq_num <= last AND detector = det",
            bind={"first": 4, "last": 5, "det": detector_id("LSSTComCam", "R22_S11")},
        )
        assert final.code is AckCode.COMPLETE, final.result
        assert sorted(site.engine.measured) == [
            ("CC_O_20261121_000004", "R22_S11"), ("CC_O_20261121_000005", "R22_S11")
        ]  # fmt: skip
        for pipeline, where, config, reason in [
            ("image-qc", "exposure.seq_num IN (4..", {}, "exposure.seq_num IN (4.."),
            ("image-qc", "exposure.seq_num = 4", {"bind": {"x": [[1]]}}, "bind x"),
            ("master-bias", "exposure.observation_type = 'flat'", {}, "selects no archived file"),
        ]:  # fmt: skip
            refused = await site.execute(pipeline, where, **config)
            assert refused.code is AckCode.FAILED, refused.result
            assert reason in refused.result
    assert len(site.engine.measured) == 2  # nothing refused ran


def _in_oods(image: str, sensors: str, status: int = 0) -> bytes:
    return encode({"imageName": image, "instrument": "LSSTComCam",
                   "exposureId": exposure_id(image), "sensors": sensors,
                   "statusCode": status, "description": ""})  # fmt: skip


async def test_auto_qc_measures_what_the_oods_announces_in_the_repository(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"auto_qc": True, "auto_qc_cameras": [2]}
    async with batch(archive, tmp_path, monkeypatch, **config) as site:
        bus, events = site.harness.bus, site.harness.remote
        async with events.stream("jobResult") as results:
            # statusCode 0: every file registered; whatever the repository has is measured.
            await bus.publish("q/OODS/0/evt/imageInOODS", _in_oods("CC_O_20261121_000004", ""))
            # Not 0: only those registered, from another OODS index.
            await bus.publish("q/OODS/1/evt/imageInOODS",
                              _in_oods("CC_O_20261121_000005", "R22_S00", status=1))  # fmt: skip
            # Ignored: malformed, of another camera, a bias (skipped: no sky).
            await bus.publish("q/OODS/0/evt/imageInOODS", b'{"imageName": "nope"}')
            await bus.publish("q/OODS/0/evt/imageInOODS", encode(
                {"imageName": "AT_O_20261121_000004", "instrument": "LSSTComCam",
                 "exposureId": 1, "sensors": "", "statusCode": 0, "description": ""}))  # fmt: skip
            await bus.publish("q/OODS/0/evt/imageInOODS", _in_oods("CC_O_20261121_000001", ""))
            for _ in range(2):
                await results.next(30)
    assert sorted(site.engine.measured) == [
        ("CC_O_20261121_000004", "R22_S00"), ("CC_O_20261121_000004", "R22_S11"),
        ("CC_O_20261121_000005", "R22_S00"),
    ]  # fmt: skip
    origins = {job.origin for job in site.harness.csc.queue.book}  # type: ignore[attr-defined]
    assert origins == {"auto_qc"}
