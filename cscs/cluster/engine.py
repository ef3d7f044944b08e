"""The batch engine: Dask's distributed scheduler, seen from the CSC's event loop.

``scheduler: local`` (the default) starts a ``LocalCluster`` of worker processes owned
by the CSC: nothing to install or run, as the embedded broker. An address
(``tcp://host:8786``) joins a site's running scheduler instead, so the same pipelines
run on its cluster. Either way the CSC only submits tasks by reference
(:mod:`cscs.ocs_batch.tasks`) and receives their small results; pixels stay on the
workers. A worker that dies mid-task has its task run again elsewhere: Dask does that
by itself (``distributed.scheduler.allowed-failures``), and the nanny of a local
worker starts a new process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distributed import Client, Future, LocalCluster, as_completed

__all__ = ["Engine", "EngineError", "TaskOutcome"]


class EngineError(Exception):
    """The batch engine cannot be started or reached; the message says which and why."""


@dataclass(frozen=True)
class TaskOutcome:
    index: int  # of the task in the submitted list
    result: Any  # the task's return value, or None when it failed
    error: str  # "" when it succeeded


class Engine:
    """A Dask client (and, for ``local``, the cluster it owns)."""

    def __init__(self, client: Client, cluster: LocalCluster | None, scheduler: str) -> None:
        self.client = client
        self.cluster = cluster
        self.scheduler = scheduler

    @classmethod
    async def start(
        cls, scheduler: str, workers: int, threads_per_worker: int, timeout: float = 20.0
    ) -> Engine:
        """Start a local cluster (``scheduler == "local"``) or connect to one;
        EngineError naming the address if it cannot."""
        cluster: LocalCluster | None = None
        try:
            if scheduler == "local":
                cluster = await LocalCluster(
                    n_workers=workers,
                    threads_per_worker=threads_per_worker,
                    processes=True,
                    asynchronous=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    silence_logs=40,
                )
                client = await Client(cluster, asynchronous=True, timeout=timeout)
            else:
                client = await Client(scheduler, asynchronous=True, timeout=timeout)
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            if cluster is not None:
                with contextlib.suppress(Exception):
                    await cluster.close()
            where = (
                "a local Dask cluster"
                if scheduler == "local"
                else f"the Dask scheduler {scheduler}"
            )
            raise EngineError(f"cannot start or reach {where}: {exc}") from exc
        return cls(client, cluster, scheduler)

    @property
    def dashboard(self) -> str:
        """The Dask dashboard's URL ("" if the scheduler has none)."""
        try:
            return str(self.client.dashboard_link)
        except (KeyError, AttributeError):
            return ""

    def submit(
        self, function: Callable[..., Any], tasks: Sequence[Any], keys: Sequence[str]
    ) -> list[Future]:
        """One Dask task per item, under the given keys (unique per job and task, so that
        the dashboard and the scheduler's logs name them)."""
        return [
            self.client.submit(function, task, key=key, pure=False)
            for task, key in zip(tasks, keys, strict=True)
        ]

    async def outcomes(self, futures: list[Future]) -> AsyncGenerator[TaskOutcome, None]:
        """Each task's outcome as it finishes (any order)."""
        index_of = {future.key: i for i, future in enumerate(futures)}
        async for future in as_completed(futures):
            index = index_of[future.key]
            try:
                yield TaskOutcome(index, await future, "")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the task's own error, raised again here by Dask
                yield TaskOutcome(index, None, f"{type(exc).__name__}: {exc}")

    async def cancel(self, futures: list[Future]) -> None:
        """Stop what has not run; a task already running finishes on its worker, and
        its result is dropped."""
        if futures:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.client.cancel(futures, force=True))

    async def workers(self) -> tuple[int, int]:
        """(workers, workers with a task)."""
        processing: dict[str, Any] = await self.client.processing()
        return len(processing), sum(1 for tasks in processing.values() if tasks)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                await self.cluster.close()
