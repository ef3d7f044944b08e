"""Background work, started as a CSC goes, and stopped without ever hanging on a task
that will not stop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any

from structlog.typing import FilteringBoundLogger

__all__ = ["Jobs", "cancel_and_wait"]


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[object]],
    log: FilteringBoundLogger,
    what: str,
    timeout: float = 10.0,
) -> None:
    """Cancel ``tasks`` and wait up to ``timeout`` for them to end. A task still running
    after that (a bug: it swallowed its cancellation) is logged by name and left, so a
    CSC's shutdown or a state change is never stuck behind it."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    done, stuck = await asyncio.wait(pending, timeout=timeout)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "task failed while stopping", task=task.get_name(), error=repr(task.exception())
            )
    if stuck:
        log.error(f"{what}: tasks did not stop", tasks=",".join(t.get_name() for t in stuck))


class Jobs:
    """Tasks a CSC starts in reaction to what it hears (an image to archive, a header to
    complete): each named, all cancelled together when the CSC stops doing that work,
    and one that ends by an exception nobody expected (a bug) logged with its traceback,
    never left for "Task exception was never retrieved"."""

    def __init__(self, log: FilteringBoundLogger, owner: str) -> None:
        self._log = log
        self._owner = owner
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=f"{self._owner}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.error("a job failed unexpectedly", job=task.get_name(), exc_info=exc)

    async def cancel(self, what: str) -> None:
        """Cancel every job but the caller's own, and wait for them (bounded)."""
        current = asyncio.current_task()
        await cancel_and_wait([t for t in self._tasks if t is not current], self._log, what)
