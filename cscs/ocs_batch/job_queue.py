"""The OCS Batch job queue: the jobs (:class:`~cscs.ocs_batch.jobs.JobBook`), the engine
they run on and the records they are written to, behind the few operations the CSC's
commands, auto_qc and QC's catch-up use — :meth:`JobQueue.execute` (check, then
queue), :meth:`JobQueue.abort`, :meth:`JobQueue.fail_interrupted` at ``start``.

``execute`` checks everything it can before a job exists — the pipeline and version,
``config`` (a JSON object with keys the pipeline knows, and its ``bind`` values), the
prerequisites, the data query (a Butler expression, evaluated by the Butler over the
archive's repository, :mod:`cscs.ocs_batch.selection`) and what it selects — and a
request that fails any of these raises ExpectedError with the reason and leaves no job.
Then the job gets an id, is announced and recorded, waits its turn (in order,
``max_running_jobs`` at once, after its prerequisites) and runs
(:mod:`cscs.ocs_batch.running`).

The queue knows which images its unfinished ``image-qc`` jobs measure, so that a job
asked for as ``exclusive`` (auto_qc's, QC's catch-up) is refused when one of its images
is being measured already: checked where the job enters the book, with no wait between
the check and the entry, so two such jobs for one image can never both be queued. A
detector whose task failed, or whose job failed around it, is recorded
(``qc_attempts``), so that the catch-up does not try it for ever.

The queue knows of the CSC only what it is given: its state (jobs start only while it is
ENABLED), a way to start tasks it cancels when it stops, its configuration's limits and
how to publish. So the CSC wires it and nothing here reaches back into the CSC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from cscs.catalog import BatchRecords, Catalog, CatalogError, Observation
from cscs.cluster import Engine
from cscs.core.errors import ExpectedError
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.ocs_batch.interface import PIPELINES, Execute, OcsBatchConfig, check_job_id, parse_config
from cscs.ocs_batch.jobs import Job, JobBook, JobState
from cscs.ocs_batch.plan import CONFIG_KEYS, JobPlan, PlanError, plan_job
from cscs.ocs_batch.products import Products
from cscs.ocs_batch.running import JobRunner, PublishDm, PublishEvent
from cscs.ocs_batch.selection import parse_bind, select_files
from cscs.ocs_batch.shared_repository import SharedRepository
from cscs.ocs_batch.tasks import remove_stale_staged
from cscs.repository import Repository, RepositoryError

__all__ = ["JobQueue", "Spawn"]

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]  # name -> task

_RESTARTED = "the batch service restarted while the job was under way"
_RECORDED = 1000  # prerequisite states from the records kept in memory


class JobQueue:
    def __init__(
        self,
        *,
        version: str,
        config: Callable[[], OcsBatchConfig],
        state: Callable[[], State],
        spawn: Spawn,
        publish_event: PublishEvent,
        publish_dm: PublishDm,
        jobs_dir: Path,
        archive_root: Path,
        log: FilteringBoundLogger,
    ) -> None:
        self.version = version
        self._config = config
        self._state = state
        self._spawn = spawn
        self._log = log
        self.book = JobBook(config().max_running_jobs)
        self.catalog: Catalog | None = None
        self.repository: SharedRepository | None = None
        self.records: BatchRecords | None = None
        self.engine: Engine | None = None
        self.archive_root = archive_root
        self.reference_catalog = ""  # directory of reference shards (zero points)
        self.products = Products(repository=lambda: self.repository, catalog=lambda: self.catalog,
                                 records=lambda: self.records, log=log)  # fmt: skip
        self.runner = JobRunner(
            self, publish_event=publish_event, publish_dm=publish_dm,
            config=config, jobs_dir=jobs_dir, log=log,
        )  # fmt: skip
        self._finished: dict[str, asyncio.Future[Job]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._recorded: dict[str, JobState] = {}  # prerequisites known from the records
        self._preparing = 0  # requests being checked: they count as queued
        # Unfinished image-qc jobs: the (image, sensor) each measures.
        self._measuring: dict[str, frozenset[tuple[str, str]]] = {}

    # ---- resources -----------------------------------------------------------------------

    async def open(
        self, catalog: Catalog, repository: Repository, engine: Engine, root: Path, limit: int
    ) -> None:
        """Switch to a newly opened catalog, repository and engine (closing those in
        use); staged products a previous run left behind are removed if no job is under
        way."""
        await self.close()
        self.catalog, self.records, self.engine = catalog, BatchRecords(catalog), engine
        self.repository = SharedRepository(repository)
        self.archive_root = root
        self.book.limit = limit
        if self.book.counts() == (0, 0):
            stale = await asyncio.to_thread(remove_stale_staged, root)
            if stale:
                self._log.warning("removed products of aborted jobs left staged", count=stale)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.close()
            self.engine = None
        if self.catalog is not None:
            self.catalog.close()
            self.catalog = self.records = None
        if self.repository is not None:
            repository, self.repository = self.repository, None
            await asyncio.to_thread(repository.close)

    async def fail_interrupted(self) -> None:
        """Jobs the records have under way (the service died during them): failed, and
        said so."""
        records = self.records
        if records is None:
            return
        failed = await asyncio.to_thread(records.fail_unfinished, _RESTARTED, current_tai())
        for record in failed:
            self._log.warning("a job was under way when the service stopped", job=record.job_id)
            await self.runner.announce_end_of_record(record)
        await self.runner.publish_jobs(failed)  # the retained list must not say "running"

    async def observation(self, image: str) -> Observation | None:
        """What the catalog knows of an image (None: nothing, or no catalog open)."""
        catalog = self.catalog
        return await asyncio.to_thread(catalog.observation, image) if catalog else None

    async def publish_stage(self, image: str, status: str, description: str) -> None:
        await self.runner.publish_stage(image, status, description)

    def busy_images(self) -> set[str]:
        """Images an unfinished ``image-qc`` job (any origin) measures."""
        return {image for pairs in self._measuring.values() for image, _ in pairs}

    def unfinished(self, origin: str) -> int:
        """Jobs of ``origin`` queued, waiting or running."""
        return sum(1 for job in self.book if job.origin == origin and not job.finished)

    # ---- execute -------------------------------------------------------------------------

    async def execute(
        self, params: Execute, origin: str, seq: int, *, exclusive: bool = False
    ) -> tuple[Job, asyncio.Future[Job]]:
        """Check a request and queue its job; the job, and a future of it once ended.
        ExpectedError with the reason, and no job, if it cannot run (``exclusive``: nor
        if an image of it is being measured by another job). Once checked, the job is
        queued and announced even if the caller is cancelled meanwhile."""
        job, plan, previous = await self._prepare(params, origin, seq)
        return job, await asyncio.shield(self._submit(job, plan, previous, exclusive))

    async def _prepare(
        self, params: Execute, origin: str, seq: int
    ) -> tuple[Job, JobPlan, dict[str, JobState]]:
        """Everything checked before a job exists; ExpectedError with the reason."""
        catalog, repository = self.catalog, self.repository
        if self.records is None or catalog is None or repository is None or self.engine is None:
            raise ExpectedError(
                "OCSBatch has no catalog, repository or engine open; start it first"
            )
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
        if queued + self._preparing >= self._config().max_queued_jobs:
            raise ExpectedError(
                f"{queued + self._preparing} jobs are waiting already (max_queued_jobs); "
                "try again later"
            )
        self._preparing += 1  # until _submit() has it in the book, or it is refused
        try:
            return await self._checked(params, origin, seq, catalog, repository)
        except BaseException:
            self._preparing -= 1
            raise

    async def _checked(
        self,
        params: Execute,
        origin: str,
        seq: int,
        catalog: Catalog,
        repository: SharedRepository,
    ) -> tuple[Job, JobPlan, dict[str, JobState]]:
        try:
            config = parse_config(params.config)
            bind = parse_bind(config.get("bind"))
            prereqs = params.prerequisites()
            bias_job = check_job_id(config["biasJob"]) if "biasJob" in config else None
        except ValueError as exc:
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
            limit = self._config().max_files_per_job
            files = await asyncio.to_thread(
                select_files, repository, catalog, params.dataQuery, bind, limit
            )
            plan = plan_job(
                job.job_id, job.pipeline, config, files, self.archive_root, self.version,
                reference_catalog=self.reference_catalog,
            )  # fmt: skip
        except (CatalogError, PlanError, ValueError) as exc:  # QueryRefusedError: a ValueError
            raise ExpectedError(str(exc)) from None
        except RepositoryError as exc:
            raise ExpectedError(f"the repository cannot be read now: {exc}") from None
        return job, plan, previous

    async def _prerequisite_states(self, prereqs: tuple[str, ...]) -> dict[str, JobState]:
        """States of prerequisites this run does not hold (from the records);
        ExpectedError for one that is nowhere."""
        records = self.records
        if records is None:
            raise ExpectedError("OCSBatch has no catalog open; start it first")
        states: dict[str, JobState] = {}
        for prereq in prereqs:
            if prereq in self.book:
                continue
            record = await asyncio.to_thread(records.job, prereq)
            if record is None:
                raise ExpectedError(f"prerequisite job {prereq[:64]!r} is not known")
            states[prereq] = JobState(record.state)
        return states

    async def _submit(
        self, job: Job, plan: JobPlan, previous: dict[str, JobState], exclusive: bool
    ) -> asyncio.Future[Job]:
        """Record and announce a new job, queue it, and start what can start; the future
        is the job once it has ended. ``previous``: the states of prerequisites that
        ended before this run (from the records)."""
        pairs = frozenset((f.image_name, f.sensor) for f in plan.files)
        try:
            state = self._state()
            if state is not State.ENABLED:
                raise ExpectedError(f"execute not allowed in state {state.name}")
            if exclusive and (busy := {i for i, _ in pairs} & self.busy_images()):
                raise ExpectedError(f"{', '.join(sorted(busy)[:3])} being measured already")
            self.book.add(job, previous)
        finally:
            self._preparing -= 1  # prepared: now in the book (counted there) or refused
        if job.pipeline == "image-qc":
            self._measuring[job.job_id] = pairs
        self._recorded.update(previous)
        needed = {p for j in self.book if not j.finished for p in j.prereqs} | set(job.prereqs)
        excess = len(self._recorded) - _RECORDED
        for old in [k for k in self._recorded if k not in needed][: max(excess, 0)]:
            del self._recorded[old]
        job.tasks_total = len(plan.tasks)
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._finished[job.job_id] = future
        self.runner.plans[job.job_id] = plan
        await self.runner.announce_new(job)
        if (state := self._state()) is not State.ENABLED and not job.finished:
            reason = f"OCSBatch left ENABLED ({state.name})"  # while it was announced
            await self._ended(self.book.finish(job.job_id, JobState.ABORTED, reason))
        if job.finished and job.job_id in self._finished:  # a prerequisite had failed
            await self._ended([job])
        await self._schedule()
        return future

    # ---- running and ending --------------------------------------------------------------

    async def _schedule(self) -> None:
        """Start what can start — only while ENABLED (leaving it aborts every job, and
        ending one there must not start the next)."""
        if self._state() is not State.ENABLED:
            return
        succeeded = frozenset(j for j, s in self._recorded.items() if s is JobState.SUCCEEDED)
        for job in self.book.ready(succeeded):
            self._tasks[job.job_id] = self._spawn(self._run(job), f"job-{job.job_id}")

    async def _run(self, job: Job) -> None:
        await self._ended(await self.runner.run(job))

    async def _ended(self, jobs: list[Job]) -> None:
        """Jobs have ended (the first one, and the dependents that failed with it)."""
        for job in jobs:
            # Recorded before it is announced: who hears the end finds the image free
            # and its attempts counted.
            await self._record_failed_qc(job, self._measuring.pop(job.job_id, frozenset()))
            await self.runner.announce_end(job)
            self._tasks.pop(job.job_id, None)
            future = self._finished.pop(job.job_id, None)
            if future is not None and not future.done():
                future.set_result(job)
        await self._schedule()

    async def _record_failed_qc(self, job: Job, pairs: frozenset[tuple[str, str]]) -> None:
        """A failed image-qc job costs each of its detectors an attempt (those measured
        have their metrics, which is what counts; one whose own task failed was given
        up already). An aborted job costs nothing: it was stopped, it did not fail."""
        records = self.records
        if job.state is not JobState.FAILED or records is None or not pairs:
            return
        try:
            await asyncio.to_thread(records.record_qc_failure, sorted(pairs), job.job_id,
                                    job.message, current_tai(), final=False)  # fmt: skip
        except CatalogError as exc:  # tried again by the catch-up: latency, not a loss
            self._log.warning("cannot record a failed QC", job=job.job_id, error=str(exc))

    async def abort(self, job_id: str, reason: str) -> None:
        """End a queued or running job ABORTED; ExpectedError saying why it cannot be."""
        job = self.book.get(job_id)
        if job is None:
            raise ExpectedError(f"no job {job_id[:64]!r} is queued or running here")
        if job.finished:
            raise ExpectedError(f"job {job.job_id} has ended already ({job.state.value})")
        if job.finishing:
            raise ExpectedError(
                f"job {job.job_id} has done its work and is publishing its products: too "
                "late to abort"
            )
        await self._abort(job, reason)

    async def abort_all(self, reason: str) -> None:
        for job in list(self.book):
            if not job.finished:
                await self._abort(job, reason)

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
            await self._ended(self.book.finish(job.job_id, JobState.ABORTED, reason))
