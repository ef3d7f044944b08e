"""The OCS Batch queueing rules, transition by transition, without a broker or Dask."""

from __future__ import annotations

import pytest

from cscs.ocs_batch.jobs import Job, JobBook, JobState, exit_code


def job(job_id: str, *prereqs: str) -> Job:
    return Job(job_id, "image-qc", "", "instrument = LATISS", {}, prereqs, "ocs", 1, 0.0)


def test_jobs_start_in_order_up_to_the_limit_and_the_rest_wait_their_turn() -> None:
    book = JobBook(limit=2)
    for name in ("a", "b", "c"):
        book.add(job(name))
    assert [j.job_id for j in book.ready()] == ["a", "b"]
    assert book.counts() == (1, 2)
    assert book.ready() == []  # full
    book.finish("b", JobState.SUCCEEDED, "done")
    assert [j.job_id for j in book.ready()] == ["c"]
    assert book.get("c") is not None
    assert book.get("c").state is JobState.RUNNING  # type: ignore[union-attr]


def test_a_job_waits_for_its_prerequisites_and_then_runs() -> None:
    book = JobBook(limit=4)
    book.add(job("bias"))
    book.add(job("flat", "bias"))
    assert [j.job_id for j in book.ready()] == ["bias"]
    assert book.get("flat").state is JobState.WAITING  # type: ignore[union-attr]
    book.finish("bias", JobState.SUCCEEDED, "done")
    assert [j.job_id for j in book.ready()] == ["flat"]


@pytest.mark.parametrize("end", [JobState.FAILED, JobState.ABORTED])
def test_a_failed_prerequisite_fails_its_dependents_at_once_transitively(end: JobState) -> None:
    book = JobBook(limit=4)
    book.add(job("bias"))
    book.add(job("dark", "bias"))
    book.add(job("flat", "dark"))
    book.add(job("qc"))
    book.ready()
    changed = book.finish("bias", end, "no")
    assert [(j.job_id, j.state) for j in changed] == [
        ("bias", end), ("dark", JobState.FAILED), ("flat", JobState.FAILED)]  # fmt: skip
    assert book.get("dark").message == f"prerequisite job bias {end.value}"  # type: ignore[union-attr]
    assert book.get("flat").message == "prerequisite job dark failed"  # type: ignore[union-attr]
    assert book.get("qc").state is JobState.RUNNING  # type: ignore[union-attr]


def test_prerequisites_from_the_records() -> None:
    book = JobBook(limit=4)
    with pytest.raises(ValueError, match="'nope' is not known"):
        book.add(job("x", "nope"))
    book.add(job("y", "old"), {"old": JobState.FAILED})
    assert book.get("y").state is JobState.FAILED  # type: ignore[union-attr]
    book.add(job("z", "older"), {"older": JobState.SUCCEEDED})
    assert [j.job_id for j in book.ready(frozenset({"older"}))] == ["z"]


def test_an_aborted_queued_job_never_starts_and_ending_twice_changes_nothing() -> None:
    book = JobBook(limit=1)
    book.add(job("a"))
    book.add(job("b"))
    book.ready()
    assert [j.job_id for j in book.finish("b", JobState.ABORTED, "by ocs")] == ["b"]
    assert book.finish("b", JobState.FAILED, "again") == []
    book.finish("a", JobState.SUCCEEDED, "done")
    assert book.ready() == []
    assert [exit_code(s) for s in (JobState.SUCCEEDED, JobState.FAILED, JobState.ABORTED)] == [
        0, 1, 255]  # fmt: skip


def test_the_book_is_bounded_and_forgets_finished_jobs_first() -> None:
    book = JobBook(limit=1, remembered=3)
    for name in "abcd":
        book.add(job(name))
    book.ready()
    book.finish("a", JobState.SUCCEEDED, "done")
    book.add(job("e"))
    assert [j.job_id for j in book] == ["b", "c", "d", "e"]  # unfinished jobs are kept


@pytest.mark.parametrize("end", [JobState.FAILED, JobState.ABORTED])
def test_a_job_on_a_prerequisite_that_has_ended_badly_fails_at_once(end: JobState) -> None:
    book = JobBook(limit=1)
    book.add(job("a"))
    book.ready()
    book.finish("a", end, "no")
    book.add(job("b", "a"))
    assert book.get("b").state is JobState.FAILED  # type: ignore[union-attr]
    assert book.get("b").message == f"prerequisite job a {end.value}"  # type: ignore[union-attr]


def test_a_finished_prerequisite_is_not_forgotten_while_a_job_waits_on_it() -> None:
    book = JobBook(limit=1, remembered=2)
    book.add(job("p"))
    book.add(job("q"))
    book.ready()  # p runs; q waits its turn
    book.add(job("w", "p"))  # waits on p
    book.finish("p", JobState.SUCCEEDED, "done")
    book.add(job("x"))
    assert "p" in book
    assert [j.job_id for j in book.ready()] == ["q"]
    book.finish("q", JobState.SUCCEEDED, "done")
    assert [j.job_id for j in book.ready()] == ["w"]
