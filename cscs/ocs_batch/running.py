"""Running one job on the engine and telling the world: the job's records, its events
(``jobId``, ``jobStatus``, ``jobResult``), its QC metrics on the DM-internal topics, its
calibration products published, and its log file.

A job's tasks are submitted at once; each result is handled as it comes (in any
order). The first task that fails fails the job and cancels the rest; an abort cancels
them all; so does a deadline (:mod:`cscs.ocs_batch.deadlines`), which fails the job
with the reason. Calibration products are written staged by the tasks and given their
final names only when every task succeeded, so a failed or aborted job leaves none
behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from cscs.catalog import BatchRecords, CalibrationRecord, JobRecord
from cscs.cluster import Engine
from cscs.core.errors import ExpectedError
from cscs.core.protocol import encode
from cscs.core.schema import EventSpec, Payload
from cscs.core.sequence import SequenceNumbers
from cscs.core.tai import current_tai
from cscs.ocs_batch.deadlines import DeadlineError, Deadlines, until
from cscs.ocs_batch.interface import (
    JOB_ID,
    JOB_RESULT,
    JOB_STATUS,
    JOBS,
    JobIdEvent,
    JobResult,
    JobsNow,
    JobStatus,
    OcsBatchConfig,
)
from cscs.ocs_batch.jobs import Job, JobBook, JobState, exit_code
from cscs.ocs_batch.plan import JobPlan, PlanError, plan_job
from cscs.ocs_batch.products import Products
from cscs.ocs_batch.qc import image_summary
from cscs.ocs_batch.tasks import publish_staged, staged_path

__all__ = ["JobRunner", "PublishDm", "PublishEvent", "Queue", "printable"]

_IMAGES_IN_RESULT = 100  # image summaries in one jobResult; the rest are counted
_ENDED_SHOWN = 20  # ended jobs in the retained `jobs` event


class _TaskFailedError(Exception):
    pass


PublishEvent = Callable[[EventSpec[Any], Payload], Awaitable[object]]  # the CSC's events
PublishDm = Callable[[str, bytes], Awaitable[bool]]  # topic, payload (QoS 1) -> sent


class Queue(Protocol):
    """What running a job needs of the queue it is in: the jobs, the engine they run on,
    the records they are written to, and where products and references are. Getters,
    because each ``start`` may open others."""

    @property
    def book(self) -> JobBook: ...
    @property
    def engine(self) -> Engine | None: ...
    @property
    def records(self) -> BatchRecords | None: ...
    @property
    def archive_root(self) -> Path: ...
    @property
    def reference_catalog(self) -> str: ...
    @property
    def products(self) -> Products: ...


class JobRunner:
    def __init__(
        self,
        queue: Queue,
        *,
        publish_event: PublishEvent,
        publish_dm: PublishDm,
        config: Callable[[], OcsBatchConfig],
        jobs_dir: Path,
        log: FilteringBoundLogger,
    ) -> None:
        self._queue = queue
        self._publish_event = publish_event
        self._publish_dm_topic = publish_dm
        self._config = config
        self._dm_seq = SequenceNumbers()  # ICD §1 (1.2: DM-internal topics too)
        self._jobs_dir = jobs_dir
        self._logger = log
        self.plans: dict[str, JobPlan] = {}

    @staticmethod
    def new_id() -> str:
        """``YYYYMMDD-xxxxxxxx``: sortable by day, unique without a counter to keep."""
        return f"{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(4)}"

    def log_path(self, job_id: str) -> Path:
        return self._jobs_dir / f"{job_id}.log"

    # ---- announcing ------------------------------------------------------------------

    async def announce_new(self, job: Job) -> None:
        await self._record(job)
        await self._publish_event(
            JOB_ID, JobIdEvent(jobId=job.job_id, commandOrigin=job.origin, commandSeq=job.seq)
        )
        await self._status(job)
        self._log(job.job_id, f"{job.pipeline} on {job.query!r}: {job.tasks_total} tasks")

    async def announce_end(self, job: Job) -> None:
        job.ended_tai = current_tai()
        self.plans.pop(job.job_id, None)
        job.result.setdefault("message", job.message)
        job.result.setdefault("log", self.log_path(job.job_id).as_uri())
        if self._queue.engine is not None:
            job.result.setdefault("dashboard", self._queue.engine.dashboard)
        await self._record(job)
        await self._status(job)
        result = json.dumps(job.result, sort_keys=True, default=str)
        await self._publish_event(
            JOB_RESULT, JobResult(jobId=job.job_id, exitCode=exit_code(job.state), result=result)
        )
        self._log(job.job_id, f"{job.state.value}: {job.message}")
        self._logger.info("job ended", job=job.job_id, state=job.state.value, message=job.message)

    async def announce_end_of_record(self, record: JobRecord) -> None:
        """A job the records had under way when the service stopped: failed, said so."""
        status = JobStatus(jobId=record.job_id, status=record.state, tasksDone=record.tasks_done,
                           tasksTotal=record.tasks_total, message=record.message)  # fmt: skip
        await self._publish_event(JOB_STATUS, status)
        result = json.dumps({"message": record.message})
        await self._publish_event(
            JOB_RESULT, JobResult(jobId=record.job_id, exitCode=1, result=result)
        )

    async def _status(self, job: Job) -> None:
        await self._publish_event(
            JOB_STATUS,
            JobStatus(jobId=job.job_id, status=job.state.value, tasksDone=job.tasks_done,
                      tasksTotal=job.tasks_total, message=job.message),
        )  # fmt: skip
        if job.tasks_done in (0, job.tasks_total) or job.finished:  # not at every task
            await self.publish_jobs()

    async def publish_jobs(self, interrupted: Sequence[JobRecord] = ()) -> None:
        """The retained ``jobs`` event: every unfinished job and the last ended ones
        (with, after a restart, the jobs the restart failed)."""
        jobs = list(self._queue.book)
        ended = [j for j in jobs if j.finished][-_ENDED_SHOWN:]
        shown = [j for j in jobs if not j.finished or j in ended]
        listing = [
            {"jobId": r.job_id, "pipeline": r.pipeline, "status": r.state,
             "tasksDone": r.tasks_done, "tasksTotal": r.tasks_total,
             "submitted_tai": r.submitted_tai, "message": r.message[:200]}
            for r in interrupted[-_ENDED_SHOWN:]
        ] + [
            {"jobId": j.job_id, "pipeline": j.pipeline, "status": j.state.value,
             "tasksDone": j.tasks_done, "tasksTotal": j.tasks_total,
             "submitted_tai": j.submitted_tai, "message": j.message[:200]}
            for j in shown
        ]  # fmt: skip
        await self._publish_event(JOBS, JobsNow(jobs=json.dumps(listing)))

    async def _record(self, job: Job) -> None:
        records = self._queue.records
        if records is None:
            return
        record = JobRecord(
            job_id=job.job_id, pipeline=job.pipeline, version=job.version, query=job.query,
            config=json.dumps(job.config), prereqs=",".join(job.prereqs), origin=job.origin,
            seq=job.seq, state=job.state.value, tasks_done=job.tasks_done,
            tasks_total=job.tasks_total, message=job.message, submitted_tai=job.submitted_tai,
            started_tai=job.started_tai, ended_tai=job.ended_tai,
            result=json.dumps(job.result, default=str),
        )  # fmt: skip
        try:
            await asyncio.to_thread(records.record_job, record)
        except Exception as exc:  # the events still tell; the log says what is missing
            self._logger.error("cannot record the job", job=job.job_id, error=str(exc))

    def _log(self, job_id: str, line: str) -> None:
        line = printable(line)  # one line per entry, whatever a commander put in it
        path = self.log_path(job_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as stream:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                stream.write(f"{stamp} {line}\n")
        except OSError as exc:
            self._logger.warning("cannot write the job's log", job=job_id, error=str(exc))

    # ---- running ---------------------------------------------------------------------

    async def run(self, job: Job) -> list[Job]:
        """Run a job the book has marked running, to its end (or its cancellation); the
        jobs that ended with it (:meth:`JobBook.finish`), for the queue to announce. Any
        failure, expected or not, ends the job FAILED with the reason: a job is never
        left running in the book or the records."""
        book = self._queue.book
        plan = self.plans.pop(job.job_id, None)
        engine = self._queue.engine
        if plan is None or engine is None:
            return book.finish(job.job_id, JobState.FAILED, "no engine to run on")
        futures: list[Any] = []
        succeeded = False
        config = self._config()
        deadlines = Deadlines(config.task_timeout, config.job_timeout)
        started = asyncio.get_running_loop().time()
        try:
            job.started_tai = current_tai()
            await self._record(job)
            await self._status(job)
            plan = await self._with_bias(job, plan)
            keys = [f"{job.job_id}-{i}" for i in range(len(plan.tasks))]
            futures = engine.submit(plan.function, plan.tasks, keys)
            async with contextlib.aclosing(
                until(engine.outcomes(futures), deadlines, started)
            ) as outcomes:
                measured = await self._collect(job, plan, outcomes, len(futures))
            job.finishing = True  # from here an abort waits for the end (JobQueue.abort)
            message = await self._finish(job, plan, measured)
            succeeded = True
            return book.finish(job.job_id, JobState.SUCCEEDED, message)
        except (_TaskFailedError, DeadlineError, PlanError, ExpectedError) as exc:
            return book.finish(job.job_id, JobState.FAILED, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a failing catalog: the job says so, nothing hangs
            self._logger.error("a job failed unexpectedly", job=job.job_id, exc_info=exc)
            return book.finish(job.job_id, JobState.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            if not succeeded:
                await engine.cancel(futures)
                _remove_staged(plan.outputs)

    async def _with_bias(self, job: Job, plan: JobPlan) -> JobPlan:
        """The plan again with the master bias of ``config["biasJob"]``, now that the
        bias job (maybe a prerequisite) has ended."""
        bias_job = job.config.get("biasJob")
        if bias_job is None:
            return plan
        products = await self._bias_products(str(bias_job), plan.instrument)
        return plan_job(job.job_id, job.pipeline, job.config, plan.files,
                        self._queue.archive_root, job.version, products,
                        self._queue.reference_catalog)  # fmt: skip

    async def _bias_products(self, bias_job: str, instrument: str) -> dict[str, str]:
        """Sensor → master bias of ``bias_job``, which must have succeeded for
        ``instrument``; ExpectedError saying why not. Looked up when a job starts, so that
        the bias job can be one of its prerequisites."""
        records = self._queue.records
        if records is None:
            raise ExpectedError("OCSBatch has no catalog open")
        held = self._queue.book.get(bias_job)
        record = None if held is not None else await asyncio.to_thread(records.job, bias_job)
        state = held.state.value if held is not None else record.state if record else "unknown"
        if state != JobState.SUCCEEDED.value:
            raise ExpectedError(f"biasJob {bias_job} has not succeeded ({state})")
        products = await asyncio.to_thread(records.calibrations_of, bias_job)
        return {
            p.sensor: p.path for p in products if p.kind == "bias" and p.instrument == instrument
        }

    async def _collect(
        self, job: Job, plan: JobPlan, outcomes: Any, total: int
    ) -> dict[str, set[str]]:
        """Each task's result as it comes; the detectors measured, by image."""
        measured: dict[str, set[str]] = defaultdict(set)
        async for outcome in outcomes:
            label = plan.labels[outcome.index]
            if outcome.error:
                if not plan.outputs:  # image-qc: the image's processing failed
                    image, _, sensor = label.partition(" ")
                    await self._given_up(job, image, sensor, str(outcome.error))
                    await self.publish_stage(image, "failed", f"{label}: {outcome.error}")
                raise _TaskFailedError(f"{label}: {outcome.error}")
            self._log(job.job_id, f"{label} done on worker {outcome.result.get('worker')} "
                                  f"in {outcome.result.get('seconds')} s")  # fmt: skip
            warning = outcome.result.pop("warning", None)
            if warning:
                self._log(job.job_id, f"{label}: {printable(str(warning), 500)}")
                if "warning" not in job.result:  # once per job in the CSC's log
                    job.result["warning"] = printable(str(warning), 500)
                    self._logger.warning("image-qc", job=job.job_id, warning=job.result["warning"])
            if plan.outputs:
                job.result.setdefault("products", []).append(outcome.result)
            else:
                await self._measured(job, plan, outcome.result, measured)
            self._queue.book.progress(job.job_id, job.tasks_done + 1, total)
            await self._status(job)
        return measured

    async def _given_up(self, job: Job, image: str, sensor: str, error: str) -> None:
        """A detector whose own task failed (its file cannot be measured): recorded, so
        that QC's catch-up does not try it again and again."""
        if (records := self._queue.records) is not None:
            try:
                await asyncio.to_thread(records.record_qc_failure, [(image, sensor)],
                                        job.job_id, error, current_tai(), final=True)  # fmt: skip
            except Exception as exc:  # the stage still says failed; the log says the rest
                self._logger.warning("cannot record a failed QC", job=job.job_id, error=str(exc))

    async def _measured(
        self, job: Job, plan: JobPlan, metrics: dict[str, Any], measured: dict[str, set[str]]
    ) -> None:
        """One detector measured: recorded, on its DM-internal topic, and the image's
        summary once every detector of it this job measures is done."""
        image, sensor = str(metrics["imageName"]), str(metrics["sensor"])
        records = self._queue.records
        if records is not None:
            await asyncio.to_thread(records.record_qc, job.job_id, metrics, current_tai())
        prefix = f"{self._config().dm_prefix}/qc/{plan.instrument}/{image}"
        await self._publish_dm(f"{prefix}/{sensor}", metrics | {"jobId": job.job_id})
        await self._queue.products.qc(plan.instrument, image, sensor)  # as recorded
        measured[image].add(sensor)
        expected = sum(1 for label in plan.labels if label.startswith(f"{image} "))
        if len(measured[image]) == expected and records is not None:
            every = await asyncio.to_thread(records.qc_of, image)
            summary = image_summary(image, plan.instrument, list(every.values()))
            await self._publish_dm(prefix, summary | {"jobId": job.job_id})
            await self.publish_stage(image, "measured", _described(summary))
            images = job.result.setdefault("images", {})
            if len(images) < _IMAGES_IN_RESULT:
                images[image] = summary

    async def _publish_dm(self, topic: str, payload: dict[str, Any]) -> None:
        data = encode(payload | {"seq": self._dm_seq.next(topic), "sent_tai": current_tai()})
        if not await self._publish_dm_topic(topic, data):
            self._logger.warning("could not publish QC metrics", topic=topic)

    async def publish_stage(self, image: str, status: str, description: str) -> None:
        """The image's ``image-qc`` stage on ``{dm}/status/image-qc`` (ICD 1.1), which
        the Telemetry Gateway forwards as ``processingStatus``."""
        payload = {"imageName": image, "stage": "image-qc", "status": status,
                   "description": printable(description, 256)}  # fmt: skip
        await self._publish_dm(f"{self._config().dm_prefix}/status/image-qc", payload)

    async def _finish(self, job: Job, plan: JobPlan, measured: dict[str, set[str]]) -> str:
        if not plan.outputs:
            job.result["imagesMeasured"] = len(measured)
            detectors, images = _count(job.tasks_done, "detector"), _count(len(measured), "image")
            return f"{detectors} of {images} measured"
        await asyncio.to_thread(publish_staged, plan.outputs)
        records = self._queue.records
        products = job.result.get("products", [])
        for product in products:
            product["url"] = Path(product["output"]).as_uri()
            if records is None:
                continue
            record = CalibrationRecord(
                path=product["output"], kind=job.pipeline.removeprefix("master-"),
                instrument=plan.instrument, sensor=product["sensor"], job_id=job.job_id,
                inputs=json.dumps(product.get("inputs", 0)), software_version=job.version,
                config=json.dumps(job.config), byte_size=product["byteSize"],
                checksum=product["checkSum"], checksum_algorithm=product["checkSumAlgorithm"],
                created_tai=current_tai(),
            )  # fmt: skip
            await asyncio.to_thread(records.record_calibration, record)
            await self._queue.products.calibration(record)  # once recorded: the truth
        job.result["outputs"] = [p["url"] for p in products]
        return f"{_count(len(products), job.pipeline + ' product')} written"


def _described(summary: dict[str, Any]) -> str:
    """One line of an image's QC, for night staff."""
    parts = [_count(int(summary.get("nSensors") or 0), "detector")]
    for name, label, unit in (("psfFwhm", "seeing", '"'), ("zeroPoint", "zero point", " mag")):
        value = summary.get(name)
        parts.append(f"{label} {value:.2f}{unit}" if value is not None else f"no {label}")
    return ", ".join(parts)


def _remove_staged(outputs: list[str]) -> None:
    for output in outputs:
        staged_path(Path(output)).unlink(missing_ok=True)


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'' if number == 1 else 's'}"


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for a log line or a terminal: control characters (newlines,
    escape sequences) shown as ``?``, at most ``limit`` characters."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])
