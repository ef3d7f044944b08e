"""The OCSBatch CSC: OCS-commanded processing of archived images on Dask (ICD 1.1 §6).

``execute`` checks everything it can before a job exists — the pipeline and version,
``config`` (a JSON object with keys the pipeline knows), the prerequisites, the data
query (parsed, :mod:`cscs.catalog.query`) and what it selects in the archive catalog —
and a command that fails any of these is ``FAILED`` with the reason and leaves no job.
Then the job gets an id, announced as ``jobId`` (and in the ``INPROGRESS`` ack), waits
its turn (:class:`~cscs.ocs_batch.jobs.JobBook`: in order, ``max_running_jobs`` at once,
after its prerequisites), runs as Dask tasks (:mod:`cscs.ocs_batch.plan`,
:mod:`cscs.cluster.engine`) with ``jobStatus`` at every task done, and ends with
``jobResult`` and the command's final ack: ``COMPLETE``, ``FAILED`` or ``ABORTED``.

Every change of a job is written to the catalog's database first, so a job under way
when the CSC died is reported ``failed`` ("the batch service restarted") at the next
``start``. ``image-qc`` metrics go to the catalog and to the DM-internal topics
(``{dm}/qc/{instrument}/{image}/{sensor}``, and the image's summary once all its
selected detectors are measured); with ``auto_qc`` every archived image is measured
without a command (:mod:`cscs.ocs_batch.auto_qc`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cscs.catalog import BatchRecords, Catalog, CatalogError, QueryError, parse_query, sqlite_url
from cscs.cluster import Engine, EngineError
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.ocs_batch.auto_qc import AutoQc
from cscs.ocs_batch.interface import (
    ABORT_JOB,
    BATCH_STATUS,
    ERROR_ENGINE,
    EXECUTE,
    INTERFACE,
    PIPELINES,
    AbortJob,
    BatchStatus,
    Execute,
    OcsBatchConfig,
    check_job_id,
    parse_config,
)
from cscs.ocs_batch.jobs import Job, JobBook, JobState
from cscs.ocs_batch.plan import CONFIG_KEYS, JobPlan, PlanError, plan_job
from cscs.ocs_batch.refcat import list_shards
from cscs.ocs_batch.running import JobRunner, printable
from cscs.ocs_batch.tasks import remove_stale_staged

__all__ = ["OcsBatchCsc"]

_STATUS_INTERVAL = 5.0  # s between batchStatus telemetry
_RESTARTED = "the batch service restarted while the job was under way"
_RECORDED = 1000  # prerequisite states from the records kept in memory


class OcsBatchCsc(BaseCsc[OcsBatchConfig]):
    interface = INTERFACE
    config_schema = OcsBatchConfig
    default_config_dir: ClassVar[Path | None] = Path(__file__).parent / "config"

    def __init__(self, index: int = 0, **kwargs: Any) -> None:
        super().__init__(index, **kwargs)
        self.catalog: Catalog | None = None
        self.records: BatchRecords | None = None
        self.engine: Engine | None = None
        self.archive_root = self.state_dir / "archive"
        self.reference_catalog = ""  # directory of reference shards (zero points)
        self.book = JobBook(self.config.max_running_jobs)
        self.runner = JobRunner(self)
        self.auto_qc = AutoQc(self)
        self._finished: dict[str, asyncio.Future[Job]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._recorded: dict[str, JobState] = {}  # prerequisites known from the records
        self._preparing = 0  # execute commands being checked: they count as queued

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [bind(EXECUTE, self.do_execute), bind(ABORT_JOB, self.do_abort_job)]

    # ---- life ------------------------------------------------------------------------

    async def configure(self, config: OcsBatchConfig) -> None:
        """Open the catalog and the engine the configuration names, then switch to them;
        jobs a previous run left under way are reported failed."""
        root = config.root(self.state_dir / "archive").resolve()
        try:
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
            catalog = await asyncio.to_thread(
                Catalog, config.catalog_url or sqlite_url(root / "catalog.sqlite")
            )
        except (OSError, CatalogError) as exc:
            raise ExpectedError(f"archive {root}: {exc}") from None
        try:
            engine = await Engine.start(
                config.scheduler, config.workers, config.threads_per_worker,
                config.scheduler_timeout,
            )  # fmt: skip
        except EngineError as exc:
            catalog.close()
            raise ExpectedError(str(exc)) from None
        await self._close_resources()
        self.catalog, self.records, self.engine = catalog, BatchRecords(catalog), engine
        self.archive_root = root
        self.book.limit = config.max_running_jobs
        self.log.info("batch engine ready", scheduler=config.scheduler, dashboard=engine.dashboard)
        await self._use_reference_catalog(config)
        if not any(not job.finished for job in self.book):
            stale = await asyncio.to_thread(remove_stale_staged, root)
            if stale:
                self.log.warning("removed products of aborted jobs left staged", count=stale)
        await self._report_interrupted()
        await self.auto_qc.configure(config)

    async def _use_reference_catalog(self, config: OcsBatchConfig) -> None:
        """Say at ``start`` whether image-qc will measure zero points, and against what.
        Only the listing: the workers read the shards, and one that cannot be read
        costs each task its zero point, with the reason in the job's log."""
        directory = await asyncio.to_thread(
            lambda: (
                Path(config.reference_catalog or self.state_dir / "refcat").expanduser().resolve()
            )
        )
        self.reference_catalog = str(directory)
        try:
            shards = await asyncio.to_thread(list_shards, directory)
        except ValueError as exc:
            self.log.warning("reference catalog unreadable: no zero points", error=str(exc))
            return
        if shards:
            self.log.info("reference catalog for zero points", directory=str(directory),
                          shards=len(shards))  # fmt: skip
        else:
            self.log.warning("no reference catalog: no zero points", directory=str(directory))

    async def _report_interrupted(self) -> None:
        assert self.records is not None
        records = self.records
        failed = await asyncio.to_thread(records.fail_unfinished, _RESTARTED, current_tai())
        for record in failed:
            self.log.warning("a job was under way when the service stopped", job=record.job_id)
            await self.runner.announce_end_of_record(record)
        await self.runner.publish_jobs(failed)  # the retained list must not say "running"

    async def __aenter__(self) -> OcsBatchCsc:
        await super().__aenter__()
        self.keep_running(self._status_loop, "batch-status")
        return self

    async def close(self) -> None:
        await self.unfollow()
        await self._abort_all("the batch service is stopping")
        await super().close()
        await self._close_resources()

    async def _close_resources(self) -> None:
        if self.engine is not None:
            await self.engine.close()
            self.engine = None
        if self.catalog is not None:
            self.catalog.close()
            self.catalog = self.records = None

    async def state_changed(self, old: State, new: State) -> None:
        if old is State.ENABLED:
            await self._abort_all(f"OCSBatch left ENABLED ({new.name})")
        if new is State.STANDBY:
            await self.unfollow()
            await self._close_resources()

    async def _abort_all(self, reason: str) -> None:
        for job in list(self.book):
            if not job.finished:
                await self._abort(job, reason)

    # ---- execute -----------------------------------------------------------------------

    async def do_execute(self, params: Execute, context: CommandContext) -> str:
        request = context.request
        job, plan, previous = await self._prepare(params, request.origin, request.seq)
        # From here the job exists: it is announced (and, if the CSC has left ENABLED
        # meanwhile, aborted) even if this command is cancelled half-way.
        future = await asyncio.shield(self.submit(job, plan, previous))
        # A guess for the commander's patience: a minute, and ten seconds per task.
        await context.in_progress(timeout=60.0 + 10.0 * len(plan.tasks), result=job.job_id)
        ended = await future
        if ended.state is JobState.SUCCEEDED:
            return f"{job.job_id} succeeded: {ended.message}"
        if ended.state is JobState.ABORTED:
            raise asyncio.CancelledError(f"{job.job_id} aborted: {ended.message}")
        raise ExpectedError(f"{job.job_id} failed: {ended.message}")

    async def _prepare(
        self, params: Execute, origin: str, seq: int
    ) -> tuple[Job, JobPlan, dict[str, JobState]]:
        """Everything checked before a job exists; ExpectedError with the reason."""
        catalog = self.catalog
        if self.records is None or catalog is None or self.engine is None:
            raise ExpectedError("OCSBatch has no catalog or engine open; start it first")
        if params.pipeline not in PIPELINES:
            raise ExpectedError(
                f"unknown pipeline {params.pipeline!r}; one of {', '.join(PIPELINES)}"
            )
        if params.version not in ("", self.version):
            raise ExpectedError(
                f"{params.pipeline} version {params.version[:64]!r} is not installed "
                f"(only {self.version})"
            )
        queued, _ = self.book.counts()
        if queued + self._preparing >= self.config.max_queued_jobs:
            raise ExpectedError(
                f"{queued + self._preparing} jobs are waiting already (max_queued_jobs); "
                "try again later"
            )
        self._preparing += 1  # until submit() has it in the book, or it is refused
        try:
            return await self._checked(params, origin, seq, catalog)
        except BaseException:
            self._preparing -= 1
            raise

    async def _checked(
        self, params: Execute, origin: str, seq: int, catalog: Catalog
    ) -> tuple[Job, JobPlan, dict[str, JobState]]:
        try:
            config = parse_config(params.config)
            query = parse_query(params.dataQuery)
            prereqs = params.prerequisites()
            bias_job = check_job_id(config["biasJob"]) if "biasJob" in config else None
        except (ValueError, QueryError) as exc:
            raise ExpectedError(str(exc)) from None
        unknown = sorted(set(config) - CONFIG_KEYS[params.pipeline])
        if unknown:
            raise ExpectedError(f"{params.pipeline} has no config key {', '.join(unknown)}")
        previous = await self._prerequisite_states(prereqs)
        if bias_job is not None and bias_job not in prereqs:
            try:
                await self._prerequisite_states((bias_job,))  # known, at least
            except ExpectedError:
                raise ExpectedError(f"biasJob {bias_job!r} is not known") from None
        job = Job(
            job_id=self.runner.new_id(), pipeline=params.pipeline, version=self.version,
            query=params.dataQuery, config=config, prereqs=prereqs, origin=origin, seq=seq,
            submitted_tai=current_tai(),
        )  # fmt: skip
        try:
            files = await asyncio.to_thread(catalog.select, query, self.config.max_files_per_job)
            plan = plan_job(
                job.job_id, job.pipeline, config, files, self.archive_root, self.version,
                reference_catalog=self.reference_catalog,
            )  # fmt: skip
        except (CatalogError, PlanError, ValueError) as exc:
            raise ExpectedError(str(exc)) from None
        return job, plan, previous

    async def _prerequisite_states(self, prereqs: tuple[str, ...]) -> dict[str, JobState]:
        """States of prerequisites this run does not hold (from the records);
        ExpectedError for one that is nowhere."""
        assert self.records is not None
        records = self.records
        states: dict[str, JobState] = {}
        for prereq in prereqs:
            if prereq in self.book:
                continue
            record = await asyncio.to_thread(records.job, prereq)
            if record is None:
                raise ExpectedError(f"prerequisite job {prereq[:64]!r} is not known")
            states[prereq] = JobState(record.state)
        return states

    async def bias_products(self, bias_job: str, instrument: str) -> dict[str, str]:
        """Sensor → master bias of ``bias_job``, which must have succeeded for
        ``instrument``; ExpectedError saying why not. Looked up when a job starts, so that
        the bias job can be one of its prerequisites."""
        assert self.records is not None
        records = self.records
        held = self.book.get(bias_job)
        record = None if held is not None else await asyncio.to_thread(records.job, bias_job)
        state = held.state.value if held is not None else record.state if record else "unknown"
        if state != JobState.SUCCEEDED.value:
            raise ExpectedError(f"biasJob {bias_job} has not succeeded ({state})")
        products = await asyncio.to_thread(records.calibrations_of, bias_job)
        return {
            p.sensor: p.path for p in products if p.kind == "bias" and p.instrument == instrument
        }

    async def submit(
        self, job: Job, plan: JobPlan, previous: dict[str, JobState] | None = None
    ) -> asyncio.Future[Job]:
        """Record and announce a new job, queue it, and start what can start; the future
        is the job once it has ended. ``previous``: the states of prerequisites that
        ended before this run (from the records)."""
        try:
            if self.state is not State.ENABLED:
                raise ExpectedError(f"execute not allowed in state {self.state.name}")
            self.book.add(job, previous)
        finally:
            self._preparing -= 1  # prepared: now in the book (counted there) or refused
        self._recorded.update(previous or {})
        needed = {p for j in self.book if not j.finished for p in j.prereqs} | set(job.prereqs)
        excess = len(self._recorded) - _RECORDED
        for old in [k for k in self._recorded if k not in needed][: max(excess, 0)]:
            del self._recorded[old]
        job.tasks_total = len(plan.tasks)
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._finished[job.job_id] = future
        self.runner.plans[job.job_id] = plan
        await self.runner.announce_new(job)
        if self.state is not State.ENABLED and not job.finished:  # left while announcing
            reason = f"OCSBatch left ENABLED ({self.state.name})"
            await self.ended(self.book.finish(job.job_id, JobState.ABORTED, reason))
        if job.finished and job.job_id in self._finished:  # a prerequisite had failed
            await self.ended([job])
        await self.schedule()
        return future

    async def schedule(self) -> None:
        """Start what can start — only while ENABLED (leaving it aborts every job, and
        ending one there must not start the next)."""
        if self.state is not State.ENABLED:
            return
        succeeded = frozenset(j for j, s in self._recorded.items() if s is JobState.SUCCEEDED)
        for job in self.book.ready(succeeded):
            self._tasks[job.job_id] = self.jobs.spawn(self.runner.run(job), f"job-{job.job_id}")

    async def ended(self, jobs: list[Job]) -> None:
        """Jobs have ended (the first one, and the dependents that failed with it)."""
        for job in jobs:
            await self.runner.announce_end(job)
            self._tasks.pop(job.job_id, None)
            future = self._finished.pop(job.job_id, None)
            if future is not None and not future.done():
                future.set_result(job)
        await self.schedule()

    # ---- abortJob ----------------------------------------------------------------------

    async def do_abort_job(self, params: AbortJob, context: CommandContext) -> str:
        job = self.book.get(params.jobId)
        if job is None:
            raise ExpectedError(f"no job {params.jobId[:64]!r} is queued or running here")
        if job.finished:
            raise ExpectedError(f"job {job.job_id} has ended already ({job.state.value})")
        if job.finishing:
            raise ExpectedError(
                f"job {job.job_id} has done its work and is publishing its products: too "
                "late to abort"
            )
        await self._abort(job, f"aborted by {printable(context.request.origin)}")
        return f"{job.job_id} aborted"

    async def _abort(self, job: Job, reason: str) -> None:
        """Cancel a job's tasks and end it ABORTED; one that is publishing its products
        is let finish (an abort then would leave some published and some not)."""
        task = self._tasks.get(job.job_id)
        if task is not None and not task.done():
            if not job.finishing:
                task.cancel(reason)
            await asyncio.wait([task])
        self._tasks.pop(job.job_id, None)
        if not job.finished:
            await self.ended(self.book.finish(job.job_id, JobState.ABORTED, reason))

    # ---- status ------------------------------------------------------------------------

    async def _status_loop(self) -> None:
        while True:
            queued, running = self.book.counts()
            workers, busy = 0, 0
            if self.engine is not None:
                try:
                    workers, busy = await self.engine.workers()
                except Exception as exc:  # the scheduler is gone: say so, keep reporting
                    self.log.warning("cannot reach the Dask scheduler", error=str(exc))
                    await self._engine_lost(str(exc))
            await self.publish_telemetry(
                BATCH_STATUS, BatchStatus(jobsQueued=queued, jobsRunning=running,
                                          workers=workers, workersBusy=busy),
            )  # fmt: skip
            await asyncio.sleep(_STATUS_INTERVAL)

    async def _engine_lost(self, why: str) -> None:
        if self.state is State.ENABLED:
            await self.fault(
                ERROR_ENGINE, f"the Dask scheduler {self.config.scheduler} is lost: {why}"
            )
