"""Batch jobs and the decisions about them, free of I/O: which job starts next, which fail
because a prerequisite failed, what a job's status says.

The CSC owns a :class:`JobBook`, tells it what happened (a job was submitted, started,
progressed, ended) and acts on what it answers; the book never waits, sends or reads.
So the queueing rules are tested transition by transition without a broker or Dask.

Rules (ICD 1.1 ``OCSBatch``): jobs start in the order they were submitted, at most
``limit`` running at once; a job with prerequisites ``waiting`` until they have all
succeeded, and failed at once when one of them fails or is aborted; an aborted job
that had not started never starts.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FINISHED", "Job", "JobBook", "JobState", "exit_code"]


class JobState(enum.StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"  # on prerequisites
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.ABORTED})
_EXIT_CODES = {JobState.SUCCEEDED: 0, JobState.FAILED: 1, JobState.ABORTED: 255}


def exit_code(state: JobState) -> int:
    """``jobResult.exitCode`` (ICD 1.1): 0 succeeded, 1 failed, 255 aborted."""
    return _EXIT_CODES[state]


@dataclass
class Job:
    """One job: what was asked, by whom, and how far it got."""

    job_id: str
    pipeline: str
    version: str
    query: str
    config: dict[str, Any]
    prereqs: tuple[str, ...]
    origin: str  # of the execute command
    seq: int
    submitted_tai: float
    state: JobState = JobState.QUEUED
    tasks_done: int = 0
    tasks_total: int = 0
    message: str = ""
    started_tai: float | None = None
    ended_tai: float | None = None
    result: dict[str, Any] = field(default_factory=dict)
    finishing: bool = False  # its tasks are done; its products are being published

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class JobBook:
    """Every job this CSC knows of (bounded: the oldest finished ones are forgotten)."""

    def __init__(self, limit: int, remembered: int = 1000) -> None:
        if limit < 1:
            raise ValueError("at least one job must be able to run")
        self.limit = limit
        self._remembered = remembered
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs.values())

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def add(self, job: Job, finished_prereqs: dict[str, JobState] | None = None) -> None:
        """Take a new job; ValueError if a prerequisite is unknown (not in the book nor
        in ``finished_prereqs``, the states of older jobs from the records)."""
        if job.job_id in self._jobs:
            raise ValueError(f"job {job.job_id} exists already")
        known = finished_prereqs or {}
        for prereq in job.prereqs:
            if prereq not in self._jobs and prereq not in known:
                raise ValueError(f"prerequisite job {prereq!r} is not known")
        self._jobs[job.job_id] = job
        self._forget_old()
        if job.prereqs:
            job.state = JobState.WAITING
        for prereq in job.prereqs:
            held = self._jobs.get(prereq)
            state = held.state if held is not None else known.get(prereq)
            if state in FINISHED and state is not JobState.SUCCEEDED:
                assert state is not None
                self._end(job, JobState.FAILED, f"prerequisite job {prereq} {state.value}")
                break

    def counts(self) -> tuple[int, int]:
        """(queued or waiting, running)."""
        running = sum(1 for j in self if j.state is JobState.RUNNING)
        queued = sum(1 for j in self if j.state in (JobState.QUEUED, JobState.WAITING))
        return queued, running

    def ready(self, succeeded_elsewhere: frozenset[str] = frozenset()) -> list[Job]:
        """The jobs to start now, in submission order, and mark them running. Call after
        every change. ``succeeded_elsewhere``: prerequisites that succeeded before this
        book knew of them (from the records)."""
        _, running = self.counts()
        starting: list[Job] = []
        for job in self:
            if running + len(starting) >= self.limit:
                break
            if job.state is JobState.QUEUED or (
                job.state is JobState.WAITING
                and all(self._succeeded(p, succeeded_elsewhere) for p in job.prereqs)
            ):
                starting.append(job)
        for job in starting:
            job.state = JobState.RUNNING
        return starting

    def _succeeded(self, prereq: str, elsewhere: frozenset[str]) -> bool:
        job = self._jobs.get(prereq)
        return prereq in elsewhere if job is None else job.state is JobState.SUCCEEDED

    def progress(self, job_id: str, done: int, total: int) -> Job:
        job = self._jobs[job_id]
        job.tasks_done, job.tasks_total = done, total
        return job

    def finish(self, job_id: str, state: JobState, message: str, **result: Any) -> list[Job]:
        """End a job; the jobs that change with it (it first, then every job waiting on
        it that therefore fails, transitively), each already in its new state."""
        if state not in FINISHED:
            raise ValueError(f"{state.value} is not an end state")
        job = self._jobs[job_id]
        if job.finished:
            return []
        self._end(job, state, message)
        job.result.update(result)
        changed = [job]
        if state is not JobState.SUCCEEDED:
            changed.extend(self._fail_dependents(job))
        return changed

    def _fail_dependents(self, failed: Job) -> list[Job]:
        changed: list[Job] = []
        for job in self:
            if not job.finished and failed.job_id in job.prereqs:
                self._end(
                    job, JobState.FAILED, f"prerequisite job {failed.job_id} {failed.state.value}"
                )
                changed.append(job)
                changed.extend(self._fail_dependents(job))
        return changed

    @staticmethod
    def _end(job: Job, state: JobState, message: str) -> None:
        job.state = state
        job.message = message

    def _forget_old(self) -> None:
        """Forget the oldest finished jobs beyond ``remembered`` — never one that an
        unfinished job still waits on (it would then wait for ever)."""
        excess = len(self._jobs) - self._remembered
        if excess <= 0:
            return
        needed = {p for j in self if not j.finished for p in j.prereqs}
        for job_id in [j.job_id for j in self if j.finished and j.job_id not in needed][:excess]:
            del self._jobs[job_id]
