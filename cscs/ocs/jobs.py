"""``cscs ocs jobs``: OCS Batch's jobs as a table, or one job followed to its end.

The table is the retained ``jobs`` event of ``OCSBatch:0`` (so it shows at once, however
late the operator looks); ``--follow JOBID`` draws the job's ``jobStatus`` progress
until its ``jobResult``. :func:`jobs_table` is pure (tested without a broker).
"""

from __future__ import annotations

from typing import Any, TextIO

from cscs.core.remote import Remote
from cscs.core.topics import CscAddress
from cscs.core.transport import Transport
from cscs.ocs.cells import age_cell, count_cell, table, text_cell
from cscs.ocs.listing import show_listing
from cscs.ocs.progress import Progress
from cscs.ocs_batch.interface import JOB_RESULT, JOB_STATUS, JOBS

__all__ = ["follow_job", "jobs_table", "show_jobs"]


def jobs_table(listing: list[dict[str, Any]], now: float) -> str:
    """The jobs as plain aligned text: id, pipeline, state, progress, age, message."""
    rows = [
        (
            text_cell(job.get("jobId"), 40),
            text_cell(job.get("pipeline"), 20),
            text_cell(job.get("status"), 12),
            f"{count_cell(job.get('tasksDone'))}/{count_cell(job.get('tasksTotal'))}",
            age_cell(now, job.get("submitted_tai")),
            text_cell(job.get("message", ""), 60),
        )
        for job in listing
        if isinstance(job, dict)
    ]
    return table(("JOB", "PIPELINE", "STATE", "PROGRESS", "AGE", "MESSAGE"), rows)


async def show_jobs(bus: Transport, prefix: str, out: TextIO, timeout: float = 5.0) -> int:
    """Print the jobs table; 1 if OCSBatch:0 has published none (not running?)."""
    address = CscAddress("OCSBatch", 0, prefix)
    return await show_listing(bus, address, JOBS, "jobs", jobs_table, out,
                              empty="no jobs yet", timeout=timeout)  # fmt: skip


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
