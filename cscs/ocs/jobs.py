"""``cscs ocs jobs``: OCS Batch's jobs as a table, or one job followed to its end.

The table is the retained ``jobs`` event of ``OCSBatch:0`` (so it shows at once, however
late the operator looks); ``--follow JOBID`` draws the job's ``jobStatus`` progress
until its ``jobResult``. :func:`jobs_table` is pure (tested without a broker).
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from cscs.core.remote import Remote
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress
from cscs.core.transport import Transport
from cscs.ocs.progress import Progress
from cscs.ocs_batch.interface import JOB_RESULT, JOB_STATUS, JOBS

__all__ = ["follow_job", "jobs_table", "show_jobs"]


def jobs_table(listing: list[dict[str, Any]], now: float) -> str:
    """The jobs as plain aligned text: id, pipeline, state, progress, age, message."""
    header = ("JOB", "PIPELINE", "STATE", "PROGRESS", "AGE", "MESSAGE")
    rows = [header] + [
        (
            _text(job.get("jobId"), 40),
            _text(job.get("pipeline"), 20),
            _text(job.get("status"), 12),
            f"{_count(job.get('tasksDone'))}/{_count(job.get('tasksTotal'))}",
            _age(now, job.get("submitted_tai")),
            _text(job.get("message", ""), 60),
        )
        for job in listing
        if isinstance(job, dict)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _text(value: object, limit: int) -> str:
    """A cell: anyone can publish the retained event, so nothing of it reaches the
    terminal as a control sequence, and no cell is longer than ``limit``."""
    return "".join(c if c.isprintable() else "?" for c in str(value)[:limit])


def _count(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
        return str(value)
    return "?"


def _age(now: float, submitted: object) -> str:
    if not isinstance(submitted, int | float) or not 0 <= now - submitted < 10 * 365 * 86400:
        return "?"
    seconds = now - float(submitted)
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def show_jobs(bus: Transport, prefix: str, out: TextIO, timeout: float = 5.0) -> int:
    """Print the jobs table; 1 if OCSBatch:0 has published none (not running?)."""
    async with Remote(bus, CscAddress("OCSBatch", 0, prefix)) as batch:
        try:
            jobs = await batch.next(JOBS, timeout)
        except TimeoutError:
            print(f"no jobs event from OCSBatch:0 within {timeout:g} s: is it running?", file=out)
            return 1
    try:
        listing = json.loads(jobs.data.jobs)
    except ValueError:
        listing = None
    if not isinstance(listing, list):
        print("OCSBatch:0's jobs event is not a list of jobs (forged?)", file=out)
        return 1
    print(jobs_table(listing, current_tai()) if listing else "no jobs yet", file=out)
    return 0


async def follow_job(bus: Transport, prefix: str, job_id: str, out: TextIO) -> int:
    """Draw a job's progress until it ends; its exit code (0 succeeded)."""
    progress = Progress(out)
    async with (
        Remote(bus, CscAddress("OCSBatch", 0, prefix)) as batch,
        batch.events(JOB_STATUS) as statuses,
        batch.events(JOB_RESULT) as results,
    ):
        progress.say(f"following job {job_id} (Ctrl-C stops following, not the job)")
        while True:
            status = await statuses.next(None)
            if status.data.jobId != job_id:
                continue
            data = status.data
            label = f"{job_id} {data.status}"
            if progress.live:
                progress.step(data.tasksDone + 1, max(data.tasksTotal, 1), label)
            else:  # a pipe or a log: a line per change
                progress.say(f"{label} {data.tasksDone}/{data.tasksTotal}")
            if data.status in ("succeeded", "failed", "aborted"):
                break
        while (result := await results.next(30)).data.jobId != job_id:
            pass
        progress.done()
        print(f"{job_id} {data.status}: {data.message}", file=out)
        print(f"result: {result.data.result}", file=out)
        return result.data.exitCode
