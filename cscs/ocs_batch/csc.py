"""The OCSBatch CSC: OCS-commanded processing of archived images on Dask (ICD 1.1 §6).

``execute`` checks everything it can before a job exists — the pipeline and version,
``config`` (a JSON object with keys the pipeline knows, and the query's ``bind`` values),
the prerequisites, the data query (a Butler ``where`` expression evaluated by the Butler
over the archive's repository, :mod:`cscs.ocs_batch.selection`) and what it selects —
and a command that fails any of these is ``FAILED`` with the reason and leaves no job.
Then the job gets an id, announced as ``jobId`` (and in the ``INPROGRESS`` ack), waits
its turn (:mod:`cscs.ocs_batch.job_queue`: in order, ``max_running_jobs`` at once, after
its prerequisites), runs as Dask tasks (:mod:`cscs.ocs_batch.plan`,
:mod:`cscs.cluster.engine`) with ``jobStatus`` at every task done, and ends with
``jobResult`` and the command's final ack: ``COMPLETE``, ``FAILED`` or ``ABORTED``.

Every change of a job is written to the catalog's database first, so a job under way
when the CSC died is reported ``failed`` ("the batch service restarted") at the next
``start``. ``image-qc`` metrics go to the catalog and to the DM-internal topics
(``{dm}/qc/{instrument}/{image}/{sensor}``, and the image's summary once all its
selected detectors are measured); with ``auto_qc`` every image the OODS announces in
the repository (``imageInOODS``) is measured without a command
(:mod:`cscs.ocs_batch.auto_qc`), and those it missed (OCSBatch down or restarting) are
caught up at ``enable`` and periodically (:mod:`cscs.ocs_batch.catch_up`). Masters and QC
are also datasets in the archive's Butler repository (:mod:`cscs.ocs_batch.products`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cscs.catalog import Catalog, CatalogError, sqlite_url
from cscs.cluster import Engine, EngineError
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.states import State
from cscs.ocs_batch.auto_qc import AutoQc
from cscs.ocs_batch.catch_up import CatchUp
from cscs.ocs_batch.interface import (
    ABORT_JOB,
    BATCH_STATUS,
    ERROR_ENGINE,
    EXECUTE,
    INTERFACE,
    AbortJob,
    BatchStatus,
    Execute,
    OcsBatchConfig,
)
from cscs.ocs_batch.job_queue import JobQueue
from cscs.ocs_batch.jobs import JobState
from cscs.ocs_batch.refcat import list_shards
from cscs.ocs_batch.running import printable
from cscs.repository import Repository, RepositoryError

__all__ = ["OcsBatchCsc"]

_STATUS_INTERVAL = 5.0  # s between batchStatus telemetry


class OcsBatchCsc(BaseCsc[OcsBatchConfig]):
    interface = INTERFACE
    config_schema = OcsBatchConfig
    default_config_dir: ClassVar[Path | None] = Path(__file__).parent / "config"

    def __init__(self, index: int = 0, **kwargs: Any) -> None:
        super().__init__(index, **kwargs)
        self.queue = JobQueue(
            version=self.version, config=lambda: self.config, state=lambda: self.state,
            spawn=self.jobs.spawn, publish_event=self.publish_event,
            publish_dm=lambda topic, data: self.bus.publish(topic, data, qos=1),
            jobs_dir=self.state_dir / "ocs_batch" / "jobs",
            archive_root=self.state_dir / "archive", log=self.log,
        )  # fmt: skip
        self.auto_qc = AutoQc(
            self.queue, follow=self.follow_topic, prefix=self.address.prefix,
            enabled=lambda: self.state is State.ENABLED, spawn=self.jobs.spawn, log=self.log,
        )  # fmt: skip
        self.catch_up = CatchUp(
            self.queue, measure=self.auto_qc.measure, held=self.auto_qc.held,
            config=lambda: self.config, enabled=lambda: self.state is State.ENABLED,
            log=self.log,
        )  # fmt: skip

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [bind(EXECUTE, self.do_execute), bind(ABORT_JOB, self.do_abort_job)]

    # ---- life ------------------------------------------------------------------------

    async def configure(self, config: OcsBatchConfig) -> None:
        """Open the catalog, the repository and the engine the configuration names, then
        switch to them; jobs a previous run left under way are reported failed."""
        root = config.root(self.state_dir / "archive").resolve()
        try:
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
            catalog = await asyncio.to_thread(
                Catalog, config.catalog_url or sqlite_url(root / "catalog.sqlite")
            )
        except (OSError, CatalogError) as exc:
            raise ExpectedError(f"archive {root}: {exc}") from None
        try:
            repository = await asyncio.to_thread(Repository.open, root, config.registry_url)
        except (OSError, RepositoryError) as exc:
            catalog.close()
            raise ExpectedError(f"repository {root}: {exc}") from None
        try:
            engine = await Engine.start(
                config.scheduler, config.workers, config.threads_per_worker,
                config.scheduler_timeout,
            )  # fmt: skip
        except EngineError as exc:
            catalog.close()
            await asyncio.to_thread(repository.close)
            raise ExpectedError(str(exc)) from None
        await self.queue.open(catalog, repository, engine, root, config.max_running_jobs)
        self.log.info("batch engine ready", scheduler=config.scheduler, dashboard=engine.dashboard)
        self.queue.reference_catalog = await self._reference_catalog(config)
        await self.queue.fail_interrupted()
        await self.queue.products.reconcile()  # what the repository missed: registered again
        await self.auto_qc.configure(config)

    async def _reference_catalog(self, config: OcsBatchConfig) -> str:
        """Say at ``start`` whether image-qc will measure zero points, and against what.
        Only the listing: the workers read the shards, and one that cannot be read
        costs each task its zero point, with the reason in the job's log."""
        directory = await asyncio.to_thread(
            lambda: (
                Path(config.reference_catalog or self.state_dir / "refcat").expanduser().resolve()
            )
        )
        try:
            shards = await asyncio.to_thread(list_shards, directory)
        except ValueError as exc:
            self.log.warning("reference catalog unreadable: no zero points", error=str(exc))
            return str(directory)
        if shards:
            self.log.info("reference catalog for zero points", directory=str(directory),
                          shards=len(shards))  # fmt: skip
        else:
            self.log.warning("no reference catalog: no zero points", directory=str(directory))
        return str(directory)

    async def __aenter__(self) -> OcsBatchCsc:
        await super().__aenter__()
        self.keep_running(self._status_loop, "batch-status")
        self.keep_running(self.catch_up.loop, "qc-catch-up")
        self.keep_running(self.queue.products.loop, "products")
        return self

    async def close(self) -> None:
        await self.unfollow()
        await self.queue.abort_all("the batch service is stopping")
        await super().close()
        await self.queue.close()

    async def state_changed(self, old: State, new: State) -> None:
        if old is State.ENABLED:
            await self.queue.abort_all(f"OCSBatch left ENABLED ({new.name})")
        if new is State.STANDBY:
            await self.unfollow()
            await self.queue.close()
        if new is State.ENABLED:
            self.catch_up.wake()  # what was archived while it was away

    # ---- commands ----------------------------------------------------------------------

    async def do_execute(self, params: Execute, context: CommandContext) -> str:
        request = context.request
        # Once checked, the job exists: it is announced (and, if the CSC has left
        # ENABLED meanwhile, aborted) even if this command is cancelled half-way.
        job, future = await self.queue.execute(params, request.origin, request.seq)
        # A guess for the commander's patience: a minute, and ten seconds per task.
        await context.in_progress(timeout=60.0 + 10.0 * job.tasks_total, result=job.job_id)
        ended = await future
        if ended.state is JobState.SUCCEEDED:
            return f"{job.job_id} succeeded: {ended.message}"
        if ended.state is JobState.ABORTED:
            raise asyncio.CancelledError(f"{job.job_id} aborted: {ended.message}")
        raise ExpectedError(f"{job.job_id} failed: {ended.message}")

    async def do_abort_job(self, params: AbortJob, context: CommandContext) -> str:
        await self.queue.abort(params.jobId, f"aborted by {printable(context.request.origin)}")
        return f"{params.jobId} aborted"

    # ---- status ------------------------------------------------------------------------

    async def _status_loop(self) -> None:
        while True:
            queued, running = self.queue.book.counts()
            workers, busy = 0, 0
            engine = self.queue.engine
            if engine is not None:
                try:
                    workers, busy = await engine.workers()
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
