"""The demo's CSC processes: each started as a user would (``cscs run``), its output
kept in a log of its own, and stopped (SIGTERM, then SIGKILL) whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from cscs.core.topics import CscAddress

__all__ = ["log_path", "log_tail", "spawn", "stop"]


async def spawn(
    address: CscAddress,
    broker_url: str,
    env: Mapping[str, str],
    logs: Path,
    state: str = "standby",
) -> asyncio.subprocess.Process:
    """Start ``cscs run`` for one CSC, its log (stdout and stderr) to ``logs``; ``state``
    ``enabled`` is a supervisor's restart (its site configuration applied at once)."""
    log = await asyncio.to_thread(open, log_path(logs, address), "ab")
    with log:  # the child has its own descriptor once started
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cscs", "run", address.name, "--index", str(address.index),
            "--broker", broker_url, "--state", state,
            stdout=log, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **env},
        )  # fmt: skip


def log_path(logs: Path, address: CscAddress) -> Path:
    return logs / f"{address.name}-{address.index}.log"


def log_tail(path: Path, lines: int = 5) -> str:
    """The end of a log, indented, for a problem report."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"    (no log: {exc.strerror})"
    return "\n".join(f"    {line}" for line in text) or "    (empty log)"


async def stop(processes: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM to each process still running, SIGKILL to any that outlives 10 s."""
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    for process in processes:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
