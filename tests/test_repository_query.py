"""Data queries as the observatory's users type them (Butler expressions), and whatever
else arrives instead: refused with what is wrong, never more than the limit, never an
error of another kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cscs.camera.geometry import Camera
from cscs.repository import QueryRefusedError, Repository, RepositoryError
from tests.support.raws import archive_image


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    """LATISS 20261121 #1-12 (bias, bias, dark, then objects), one image the next day, and
    a ComCam object (9 detectors) in filter r_03."""
    root = tmp_path_factory.mktemp("archive")
    repository = Repository.open(root)
    for seq in range(1, 13):
        kind = "BIAS" if seq <= 2 else "DARK" if seq == 3 else "OBJECT"
        repository.register(archive_image(root, Camera.LATISS, f"AT_O_20261121_{seq:06d}",
                                          image_type=kind))  # fmt: skip
    repository.register(archive_image(root, Camera.LATISS, "AT_O_20261122_000001"))
    repository.register(archive_image(root, Camera.COMCAM, "CC_O_20261121_000004",
                                      physical_filter="r_03"))  # fmt: skip
    yield repository
    repository.close()


def found(repo: Repository, where: str, limit: int = 100, **bind: object) -> list[str]:
    return [f"{r.image_name}:{r.detector}"
            for r in repo.query_raws(where, bind=bind or None, limit=limit)]  # fmt: skip


def latiss(*seqs: int) -> list[str]:
    return [f"AT_O_20261121_{seq:06d}:0" for seq in seqs]


def test_the_users_examples_select_what_they_say(repo: Repository) -> None:
    assert found(repo, "instrument = 'LATISS' AND exposure.day_obs = 20261121") == latiss(
        *range(1, 13)
    )
    assert found(repo, "instrument = 'LATISS' AND exposure.seq_num IN (1..10)") == [
        *latiss(*range(1, 11)), "AT_O_20261122_000001:0"]  # fmt: skip
    assert len(found(repo, "exposure.seq_num IN (1..10)")) == 10 + 1 + 9  # every instrument's
    assert found(repo, "exposure.observation_type IN ('bias', 'dark')") == latiss(1, 2, 3)
    assert found(repo, "detector = 4") == ["CC_O_20261121_000004:4"]
    assert len(found(repo, "physical_filter = 'SDSSr_65mm'")) == 13
    assert len(found(repo, "band = 'r'")) == 13 + 9
    assert found(repo, "instrument = inst", inst="LATISS") == [
        *latiss(*range(1, 13)), "AT_O_20261122_000001:0"]  # fmt: skip


def test_bind_values_reach_the_butler_as_values(repo: Repository) -> None:
    assert found(repo, "instrument = inst AND exposure = exp AND detector IN (dets)",
                 inst="LSSTComCam", exp=2026112100004, dets=[0, 8]) == [
        "CC_O_20261121_000004:0", "CC_O_20261121_000004:8"]  # fmt: skip
    assert found(repo, "instrument = inst", inst="LATISS' OR instrument = 'LSSTComCam") == []
    assert found(repo, "exposure.seq_num IN (seqs)", seqs=(2, 3)) == latiss(2, 3)


def refusal(repo: Repository, where: str, limit: int = 100, **bind: object) -> str:
    with pytest.raises(QueryRefusedError) as caught:
        repo.query_raws(where, bind=bind or None, limit=limit)
    return str(caught.value)


def test_refusals_name_what_is_wrong(repo: Repository) -> None:
    syntax = refusal(repo, "instrument = 'LATISS' AND exposure.day_obs = 20261121 ORDER BY x")
    assert "syntax error at or near 'ORDER', character 55" in syntax
    assert syntax.splitlines()[-1].index("^") == syntax.splitlines()[-2].index("ORDER")
    assert "ends where more was expected" in refusal(repo, "instrument = 'LATISS' AND")
    assert "Unrecognized identifier 'instrumnt'" in refusal(repo, "instrumnt = 'LATISS'")
    assert "Unrecognized field 'nonsense' for exposure" in refusal(repo, "exposure.nonsense = 3")
    unbound = refusal(repo, "instrument = inst", other="LATISS")
    assert "Unrecognized identifier 'inst'" in unbound
    assert "bind names given: other" in unbound
    assert "do not agree (int, string)" in refusal(repo, "detector = 'x'")
    assert "not a condition" in refusal(repo, "0")  # the Butler's parser asserts on it
    assert "not an identifier" in refusal(repo, "detector = 1", **{"1x": 3})
    assert "numbers and strings only" in refusal(repo, "detector = d", d=None)
    assert "limit must be 1 to" in refusal(repo, "detector = 0", limit=0)
    assert "use bind values" in refusal(repo, "detector = 0 OR " * 400 + "detector = 1")


def test_more_results_than_the_limit_are_refused_not_cut(repo: Repository) -> None:
    assert len(found(repo, "instrument = 'LATISS'", limit=13)) == 13
    assert "more than 12 raws match" in refusal(repo, "instrument = 'LATISS'", limit=12)
    assert "more than 5 raws match" in refusal(repo, "", limit=5)


_TOKENS = st.sampled_from([
    "instrument", "detector", "exposure", "exposure.day_obs", "exposure.seq_num", "band",
    "physical_filter", "visit", "exposure.timespan", "=", "!=", "<", ">=", "AND", "OR",
    "NOT", "IN", "(", ")", ",", "..", "'LATISS'", "'r'", "4", "-1", "20261121", "1e309",
    "T'2026-11-21'", "OVERLAPS", "x", "inst", "dets", ":", ";", "'", '"', "--", "/*",
    "DROP TABLE dataset", "%", "\\", "\n", "\x00", "99999999999999999999999",
])  # fmt: skip
_WHERE = st.one_of(st.text(max_size=200), st.lists(_TOKENS, max_size=25).map(" ".join))
_VALUE = st.one_of(
    st.integers(),
    st.floats(),
    st.text(max_size=300),
    st.none(),
    st.booleans(),
    st.binary(),
    st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=5),
)
_BIND = st.one_of(st.none(), st.dictionaries(
    st.one_of(st.sampled_from(["inst", "dets", "x", "exposure"]), st.text(max_size=10)),
    _VALUE, max_size=4))  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(where=_WHERE, bind=_BIND, limit=st.integers(min_value=1, max_value=30))
def test_hostile_queries_are_answered_or_refused_never_more(
    repo: Repository, where: str, bind: dict[str, object] | None, limit: int
) -> None:
    try:
        refs = repo.query_raws(where, bind=bind, limit=limit)
    except (QueryRefusedError, RepositoryError) as exc:
        refusal = str(exc)
        refs = []
    else:
        refusal = "answered"
    assert refusal  # a refusal always says why
    assert len(refs) <= limit
    assert all(Path(r.path).is_absolute() for r in refs)
