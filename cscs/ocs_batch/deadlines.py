"""How long a running job waits for its tasks: ``task_timeout`` seconds at most for the
next one to end, ``job_timeout`` in all (:class:`~cscs.ocs_batch.interface.OcsBatchConfig`).
Without them a job whose Dask workers had all stopped stayed ``running 0/13`` for ever;
with them it ends FAILED, the reason in its status, its result and the command's ack.

:class:`Deadlines` is the decision, free of I/O; :func:`until` applies it to a stream of
task outcomes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["DeadlineError", "Deadlines", "until"]

T = TypeVar("T")


class DeadlineError(Exception):
    """A job's deadline passed; the message says which, and what it was."""


@dataclass(frozen=True)
class Deadlines:
    task_timeout: float
    job_timeout: float

    def next_wait(self, started: float, last_ended: float, now: float) -> tuple[float, str]:
        """Seconds to wait now for the next task to end (0: not a moment more), and
        the reason the job fails if none does. ``started``: when the job started;
        ``last_ended``: when its last task ended (its start, before the first)."""
        by_task = last_ended + self.task_timeout
        by_job = started + self.job_timeout
        if by_job <= by_task:
            return max(by_job - now, 0.0), (
                f"the job ran longer than job_timeout ({self.job_timeout:g} s)"
            )
        return max(by_task - now, 0.0), (
            f"no task ended within task_timeout ({self.task_timeout:g} s): the workers are "
            "stopped, lost or busy, or a task does not return"
        )


async def until(
    outcomes: AsyncGenerator[T, None], deadlines: Deadlines, started: float
) -> AsyncGenerator[T, None]:
    """``outcomes`` as they come, for as long as ``deadlines`` allow (``started``: the
    job's start, on the event loop's clock); then DeadlineError with the reason. The
    stream is closed either way (its tasks are the caller's to cancel)."""
    loop = asyncio.get_running_loop()
    last = started
    try:
        while True:
            wait, reason = deadlines.next_wait(started, last, loop.time())
            timeout = asyncio.timeout(wait)
            try:
                async with timeout:
                    outcome = await anext(outcomes)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not timeout.expired():
                    raise  # not ours: a task's own, passed on
                raise DeadlineError(reason) from None
            last = loop.time()
            yield outcome
    finally:
        await outcomes.aclose()
