"""What OCSBatch says and hears on the bus (ICD 1.1 §6 "OCSBatch"), its configuration
and error codes: declared once, used by the CSC, the operators' tools and the tests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from cscs.camera.naming import check_sensor
from cscs.core import generic as g
from cscs.core.config import ConfigSchema
from cscs.core.schema import CommandSpec, EventSpec, Payload, TelemetrySpec

__all__ = [
    "ABORT_JOB",
    "BATCH_STATUS",
    "ERROR_CATALOG",
    "ERROR_ENGINE",
    "EXECUTE",
    "INTERFACE",
    "JOBS",
    "JOB_ID",
    "JOB_RESULT",
    "JOB_STATUS",
    "PIPELINES",
    "AbortJob",
    "BatchStatus",
    "Execute",
    "JobIdEvent",
    "JobResult",
    "JobStatus",
    "JobsNow",
    "OcsBatchConfig",
    "check_job_id",
    "parse_config",
]

ERROR_ENGINE = 7001
ERROR_CATALOG = 7002
PIPELINES = ("image-qc", "master-bias", "master-dark", "master-flat")
_MAX_CONFIG = 10_000  # characters of a job's config JSON
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_MAX_PREREQS = 20


def check_job_id(value: object) -> str:
    """``value`` if it can be a job id; ValueError otherwise."""
    if not isinstance(value, str) or not _JOB_ID.fullmatch(value):
        raise ValueError(f"not a job id (e.g. 20261121-3fa2c1d9): {str(value)[:64]!r}")
    return value


class Execute(Payload):
    pipeline: str = Field(max_length=64)
    version: str = Field(default="", max_length=64)
    dataQuery: str = Field(max_length=4000)
    """A Butler `where` expression over the archive repository's raws (e.g.
    `instrument = 'LATISS' AND exposure.day_obs = 20261121 AND exposure.seq_num IN
    (10..20)`), evaluated by the Butler; its bind values go in `config` as `bind`.
    docs/ocs-batch.md"""
    config: str = Field(default="", max_length=_MAX_CONFIG)
    """JSON object: the pipeline's settings, and `bind` (every pipeline): the values
    of the names `dataQuery` uses, e.g. `{"bind": {"day": 20261121, "dets": [0, 4]}}`
    (strings, integers, numbers or lists of those)"""
    prereqJobs: str = Field(default="", max_length=2000)

    def prerequisites(self) -> tuple[str, ...]:
        """The prerequisite job ids; ValueError for one that cannot be a job id, or too
        many."""
        ids = tuple(dict.fromkeys(p.strip() for p in self.prereqJobs.split(",") if p.strip()))
        if len(ids) > _MAX_PREREQS:
            raise ValueError(f"more than {_MAX_PREREQS} prerequisite jobs")
        return tuple(check_job_id(i) for i in ids)


class AbortJob(Payload):
    jobId: str = Field(max_length=64)


class JobIdEvent(Payload):
    jobId: str
    commandOrigin: str
    commandSeq: int


class JobStatus(Payload):
    jobId: str
    status: str
    """queued, waiting, running, succeeded, failed, aborted"""
    tasksDone: int
    tasksTotal: int
    message: str


class JobResult(Payload):
    jobId: str
    exitCode: int
    """0 succeeded, 1 failed, 255 aborted"""
    result: str
    """JSON: outputs, metrics summary, dashboard, log"""


class JobsNow(Payload):
    jobs: str
    """JSON list, oldest first: every job queued, waiting or running, and the last 20
    ended; each `jobId`, `pipeline`, `status`, `tasksDone`, `tasksTotal`,
    `submitted_tai`, `message`"""


class BatchStatus(Payload):
    jobsQueued: int
    jobsRunning: int
    workers: int
    workersBusy: int


EXECUTE = CommandSpec(
    "execute", Execute,
    "Run `pipeline` on the archived raws `dataQuery` (a Butler `where` expression, with "
    "`config`'s `bind` values) selects in the archive's Butler repository; a query the "
    "Butler refuses fails the command, naming what is wrong. `jobId` at once, INPROGRESS "
    "with the id, the final ack when the job ends.",
)  # fmt: skip
ABORT_JOB = CommandSpec("abortJob", AbortJob, "Abort a queued or running job.")
JOB_ID = EventSpec("jobId", JobIdEvent, "A job exists; the execute command that made it.")
JOB_STATUS = EventSpec("jobStatus", JobStatus, "A job's state or progress changed.")
JOB_RESULT = EventSpec("jobResult", JobResult, "A job ended.")
JOBS = EventSpec(
    "jobs", JobsNow,
    "The jobs now (retained, an addition to the ICD): what a monitor that starts late "
    "needs to show them, as `cscs ocs jobs` does.", retained=True,
)  # fmt: skip
BATCH_STATUS = TelemetrySpec("batchStatus", BatchStatus, "Every 5 s.")

INTERFACE = g.GENERIC.extended(
    "OCSBatch",
    "OCS-commanded processing of archived images on Dask (LDM-148 OCS Driven Batch). "
    f"Pipelines: {', '.join(PIPELINES)}. `dataQuery`: a Butler `where` expression "
    "(docs/ocs-batch.md). Master bias/dark/flat are also calibration datasets in "
    "`{instrument}/calib`, per-detector QC a dataset beside the raws. Metrics also go to "
    "`{dm}/qc/{instrument}/{imageName}[/{sensor}]` (ICD 1.1 DM-internal).",
    commands=(EXECUTE, ABORT_JOB),
    events=(JOB_ID, JOB_STATUS, JOB_RESULT, JOBS),
    telemetry=(BATCH_STATUS,),
)


def parse_config(text: str) -> dict[str, Any]:
    """A job's ``config``: empty, or a JSON object; ValueError saying what is wrong."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"config is not JSON: {exc.msg} at character {exc.pos + 1}") from None
    except RecursionError:
        raise ValueError("config is nested too deeply to be a job's configuration") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise ValueError(f"config cannot be read: {str(exc)[:120]}") from None
    if not isinstance(value, dict):
        raise ValueError(f"config must be a JSON object ({{...}}), not {type(value).__name__}")
    return value


class OcsBatchConfig(ConfigSchema):
    archive_root: str = ""
    """The archive the archivers write (a shared file system); empty:
    `$CSCS_STATE_DIR/archive`. Calibration products go under it."""
    catalog_url: str = ""
    """SQLAlchemy URL of the archive catalog; empty: `{archive_root}/catalog.sqlite`."""
    registry_url: str = Field(default="", max_length=1000)
    """The Butler registry of the archive's repository (the OODS's): empty, SQLite in
    the archive (`{archive_root}/butler.sqlite3`); or `postgresql://…`. Data queries are
    evaluated there; products are registered there."""
    scheduler: str = Field(default="local", max_length=200)
    """`local`: a Dask LocalCluster of `workers` processes, started by the CSC; or the
    address of a running scheduler, e.g. `tcp://batch.example.org:8786`."""
    scheduler_timeout: float = Field(default=20.0, gt=0.0, le=600.0)
    """Seconds to reach the scheduler (or start the local cluster) at `start`."""
    workers: int = Field(default=2, ge=1, le=64)
    threads_per_worker: int = Field(default=1, ge=1, le=16)
    max_running_jobs: int = Field(default=2, ge=1, le=100)
    max_queued_jobs: int = Field(default=100, ge=1, le=10_000)
    """Jobs waiting (queued or on prerequisites) at most; more are refused."""
    max_files_per_job: int = Field(default=10_000, ge=1, le=1_000_000)
    task_timeout: float = Field(default=1800.0, gt=0.0, le=7 * 86400.0)
    """Seconds a running job may go without one of its tasks ending (the workers
    stopped, lost or busy elsewhere; a task that never returns): then it fails, with that
    reason. More than the longest task (a master flat of many inputs)."""
    job_timeout: float = Field(default=43200.0, gt=0.0, le=7 * 86400.0)
    """Seconds a job may run, from its start to its last task's end: then it fails, with
    that reason."""
    auto_qc: bool = False
    """Run image-qc on every image of `auto_qc_cameras` the OODS announces in the
    repository (`imageInOODS`)."""
    auto_qc_cameras: list[int] = [1, 2, 3]
    """The cameras (their archivers' indexes: 1 LATISS, 2 LSSTComCam, 3 LSSTCam) whose
    images are measured."""
    auto_qc_sensors: list[str] = []
    """Measure only these detectors of each image (empty: all)."""
    auto_qc_image_types: list[str] = Field(default=["OBJECT", "ENGTEST"], max_length=10)
    """Measure only images of these types (IMGTYPE); a bias has no seeing to judge."""
    auto_qc_catch_up: bool = True
    """With `auto_qc`: at `enable` and every `auto_qc_catch_up_interval`, measure the
    archived images (of those cameras, types and detectors) that have no QC yet, e.g.
    those archived while OCSBatch was down (jobs of origin `qc_catch_up`)."""
    auto_qc_catch_up_interval: float = Field(default=60.0, ge=1.0, le=86400.0)
    """Seconds between catch-up passes."""
    auto_qc_catch_up_images: int = Field(default=10, ge=1, le=100)
    """Images a pass measures at most (oldest first); catch-up jobs unfinished count."""
    auto_qc_catch_up_grace: float = Field(default=30.0, ge=0.0, le=3600.0)
    """Seconds after a file is archived before the catch-up takes it: until then the
    archiver's announcement is auto_qc's to act on."""
    auto_qc_catch_up_days: float = Field(default=7.0, gt=0.0, le=3650.0)
    """How far back (exposure start) the catch-up looks: a site turning auto_qc on
    does not measure its whole archive."""
    dm_prefix: str = Field(default="dm", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    """Root of the DM-internal QC topics."""
    reference_catalog: str = Field(default="", max_length=4096)
    """Directory of reference-star shards (FITS tables: ra, dec, {band}_mag) that
    image-qc measures zero points against; empty: `$CSCS_STATE_DIR/refcat`. Without
    one, zeroPoint is null."""

    def root(self, default: Path) -> Path:
        return Path(self.archive_root).expanduser() if self.archive_root else default

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value: str) -> str:
        if value != "local" and not value.startswith(("tcp://", "tls://", "inproc://")):
            raise ValueError("scheduler is `local` or an address like tcp://host:8786")
        return value

    @field_validator("auto_qc_sensors")
    @classmethod
    def _sensors(cls, sensors: list[str]) -> list[str]:
        for sensor in sensors:
            check_sensor(sensor)
        return sensors
