"""Supervised work: every task a CSC starts is named, logged with its traceback if it
fails, and either handled or reported; none ever dies silently, none is left behind.

Two kinds, one mechanism (:class:`FailureHandler`, the CSC's ``task_failed``: an
``errorCode`` and FAULT):

* long-lived loops (the command reader, the heartbeat, a component's status loop):
  :func:`keep_running` runs one for as long as the CSC runs; if it raises, or returns
  when it should not, the failure is reported and the loop started again after a
  back-off — so a CSC in FAULT still hears ``standby`` and still beats.
* jobs started by what the CSC hears (an image to archive, a header to complete):
  :class:`Jobs`. A job that fails unexpectedly is logged, then handled by its own
  ``on_error`` (e.g. "this image is left to catch-up", published) or, without one,
  reported as a failure of the CSC.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from cscs.core.backoff import Backoff

__all__ = [
    "ErrorLog",
    "FailureHandler",
    "Jobs",
    "cancel_and_wait",
    "keep_running",
    "until_stop_signal",
]

#: What is done with an unexpected failure: ``(task name, exception)``.
FailureHandler = Callable[[str, BaseException], Awaitable[None]]
ErrorHandler = Callable[[BaseException], Awaitable[None]]


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]],
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


class ErrorLog(Protocol):
    """Where :func:`keep_running` says a failure: a structlog logger, or a shim that hands
    the line to another thread's logger (the DAQ server's)."""

    def error(self, event: str, **fields: Any) -> Any: ...


class TaskEndedError(RuntimeError):
    """A loop that should run for the CSC's whole life returned."""


async def keep_running(
    loop: Callable[[], Awaitable[None]],
    name: str,
    log: ErrorLog,
    on_failure: FailureHandler,
    backoff: Backoff | None = None,
) -> None:
    """Run ``loop()`` until cancelled, reporting and restarting it whenever it fails.

    The back-off (1 s, doubling to a minute) keeps a loop that fails at once from
    spinning; it starts again from 1 s once a run has lasted a minute."""
    backoff = backoff or Backoff(initial=1.0, maximum=60.0)
    clock = asyncio.get_running_loop()
    while True:
        started = clock.time()
        try:
            await loop()
            failure: BaseException = TaskEndedError(f"{name} ended by itself")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = exc
        if clock.time() - started > 60.0:
            backoff.reset()
        delay = backoff.next_delay()
        log.error(
            "a long-lived task failed; it will be restarted",
            task=name, retry_in=round(delay, 1), exc_info=failure,
        )  # fmt: skip
        await _handle(on_failure(name, failure), log, name)
        await asyncio.sleep(delay)


async def _handle(handling: Awaitable[None], log: ErrorLog, name: str) -> None:
    """Run a failure handler; one that fails itself is logged, never raised."""
    try:
        await handling
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("handling a failure failed", task=name, exc_info=exc)


class Jobs:
    """Tasks a CSC starts in reaction to what it hears: each named, all cancelled
    together when the CSC stops doing that work. One that ends by an exception nobody
    expected (a bug) is logged with its traceback and handled — by the job's
    ``on_error``, or else by ``on_failure`` (the CSC's ``task_failed``) — never left for
    "Task exception was never retrieved"."""

    def __init__(
        self, log: FilteringBoundLogger, owner: str, on_failure: FailureHandler | None = None
    ) -> None:
        self._log = log
        self._owner = owner
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[None]] = set()
        self._handling: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(
        self,
        coroutine: Coroutine[Any, Any, None],
        name: str,
        *,
        on_error: ErrorHandler | None = None,
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=f"{self._owner}-{name}")
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._done(done, on_error))
        return task

    def _done(self, task: asyncio.Task[None], on_error: ErrorHandler | None) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        name = task.get_name()
        self._log.error("a job failed unexpectedly", job=name, exc_info=exc)
        if on_error is not None:
            handling: Awaitable[None] = on_error(exc)
        elif self._on_failure is not None:
            handling = self._on_failure(name, exc)
        else:
            return
        handler = asyncio.create_task(_handle(handling, self._log, name), name=f"{name}-failed")
        self._handling.add(handler)
        handler.add_done_callback(self._handling.discard)

    async def cancel(self, what: str) -> None:
        """Cancel every job but the caller's own, and wait for them (bounded)."""
        current = asyncio.current_task()
        await cancel_and_wait([t for t in self._tasks if t is not current], self._log, what)


async def until_stop_signal() -> None:
    """Returns on the first SIGTERM or SIGINT (Ctrl-C): how a long-running command
    waits for the operator, so that its ``async with`` blocks then close in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
