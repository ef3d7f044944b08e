"""OCS Batch's job deadlines (issue 29, item 13), without Dask: which deadline comes
first and what it says, and a stream of task outcomes cut off by it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from cscs.ocs_batch.deadlines import DeadlineError, Deadlines, until


async def collect(stream: AsyncGenerator[int, None], deadlines: Deadlines, seen: list[int]) -> None:
    """``stream`` under ``deadlines`` (from now) into ``seen``."""
    async for outcome in until(stream, deadlines, asyncio.get_running_loop().time()):
        seen.append(outcome)


def test_the_nearer_deadline_decides_and_says_which_it_is() -> None:
    deadlines = Deadlines(task_timeout=60.0, job_timeout=100.0)
    wait, reason = deadlines.next_wait(started=0.0, last_ended=0.0, now=10.0)
    assert wait == 50.0
    assert "no task ended within task_timeout (60 s)" in reason
    wait, reason = deadlines.next_wait(started=0.0, last_ended=80.0, now=90.0)
    assert wait == 10.0  # the job's own limit comes before the next task's
    assert reason == "the job ran longer than job_timeout (100 s)"
    assert deadlines.next_wait(started=0.0, last_ended=0.0, now=500.0)[0] == 0.0


async def test_tasks_that_stop_ending_end_the_stream_with_the_reason() -> None:
    closed = asyncio.Event()

    async def outcomes() -> AsyncGenerator[int, None]:
        try:
            yield 1
            yield 2
            await asyncio.Event().wait()  # the workers have stopped: nothing comes
            yield 3
        finally:
            closed.set()

    seen: list[int] = []
    deadlines = Deadlines(task_timeout=0.05, job_timeout=60.0)
    with pytest.raises(DeadlineError, match=r"no task ended within task_timeout \(0.05 s\)"):
        await collect(outcomes(), deadlines, seen)
    assert seen == [1, 2]
    assert closed.is_set()


async def test_a_job_that_keeps_making_progress_still_ends_at_its_own_limit() -> None:
    async def outcomes() -> AsyncGenerator[int, None]:
        number = 0
        while True:
            await asyncio.sleep(0.01)  # a task ends every 10 ms, for ever
            number += 1
            yield number

    seen: list[int] = []
    deadlines = Deadlines(task_timeout=1.0, job_timeout=0.1)
    with pytest.raises(DeadlineError, match=r"longer than job_timeout \(0.1 s\)"):
        await collect(outcomes(), deadlines, seen)
    assert 1 <= len(seen) < 20


async def test_the_streams_own_errors_and_its_end_pass_through() -> None:
    async def failing() -> AsyncGenerator[int, None]:
        yield 1
        raise TimeoutError("a Dask call of its own timed out")

    deadlines = Deadlines(task_timeout=60.0, job_timeout=60.0)
    with pytest.raises(TimeoutError, match="of its own"):
        await collect(failing(), deadlines, [])

    async def two() -> AsyncGenerator[int, None]:
        yield 1
        yield 2

    seen: list[int] = []
    await collect(two(), deadlines, seen)
    assert seen == [1, 2]
