"""An engine for OCSBatch on the in-memory bus: each task's result handed back in the
test's process at once (what the tests that use it check is which files are measured and
what is said about them, not the measurement: tests/test_ocs_batch.py measures on Dask)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from cscs.cluster import TaskOutcome
from cscs.ocs_batch.tasks import QcTask

__all__ = ["InProcessEngine", "metrics"]


def metrics(image: str, sensor: str) -> dict[str, Any]:
    """What image-qc would say of a detector: plausible values, no zero point."""
    return {"imageName": image, "sensor": sensor, "psfFwhm": 0.8, "psfE1": 0.0, "psfE2": 0.0,
            "ellipticity": 0.0, "skyMean": 100.0, "skyRms": 10.0, "nSources": 5,
            "nPsfStars": 3, "zeroPoint": None, "amplifiers": []}  # fmt: skip


class InProcessEngine:
    """Hands each task's result back at once: metrics for a QcTask, an error for the
    images in ``broken``; ``gate``, when given, holds every task until it is set."""

    dashboard = ""

    def __init__(self, broken: set[str], gate: asyncio.Event | None) -> None:
        self.broken, self.gate = broken, gate
        self.measured: list[tuple[str, str]] = []

    def submit(
        self, function: Callable[..., Any], tasks: Sequence[Any], keys: Sequence[str]
    ) -> list[Any]:
        return list(tasks)

    async def outcomes(self, futures: list[QcTask]) -> AsyncGenerator[TaskOutcome, None]:
        for index, task in enumerate(futures):
            if self.gate is not None:
                await self.gate.wait()
            if task.image in self.broken:
                yield TaskOutcome(index, None, f"OSError: cannot read {task.path}")
                continue
            self.measured.append((task.image, task.sensor))
            yield TaskOutcome(index, metrics(task.image, task.sensor) | {"worker": "w"}, "")

    async def cancel(self, futures: list[Any]) -> None:
        pass

    async def workers(self) -> tuple[int, int]:
        return 1, 0

    async def close(self) -> None:
        pass
