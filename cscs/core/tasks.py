"""Stopping tasks without ever hanging on one that will not stop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from structlog.typing import FilteringBoundLogger

__all__ = ["cancel_and_wait"]


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
