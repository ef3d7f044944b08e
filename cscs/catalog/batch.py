"""OCS Batch's records in the archive catalog's database: its jobs, the QC metrics of each
detector, and the calibration products with their provenance.

Jobs are written at every change of state, so after a crash the next start finds the
ones that were under way and reports them failed ("the batch service restarted"):
never forgotten, never silently run again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from cscs.catalog.catalog import METADATA, Catalog, CatalogError, upsert

__all__ = ["BatchRecords", "CalibrationRecord", "JobRecord"]

JOBS = sa.Table(
    "batch_jobs",
    METADATA,
    sa.Column("job_id", sa.String(40), primary_key=True),
    sa.Column("pipeline", sa.String(32), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("query", sa.Text, nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("prereqs", sa.Text, nullable=False),
    sa.Column("origin", sa.String(128), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("tasks_done", sa.Integer, nullable=False),
    sa.Column("tasks_total", sa.Integer, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("submitted_tai", sa.Float, nullable=False),
    sa.Column("started_tai", sa.Float, nullable=True),
    sa.Column("ended_tai", sa.Float, nullable=True),
    sa.Column("result", sa.Text, nullable=False),
)
QC_METRICS = sa.Table(
    "qc_metrics",
    METADATA,
    sa.Column("image_name", sa.String(64), nullable=False),
    sa.Column("sensor", sa.String(16), nullable=False),
    sa.Column("job_id", sa.String(40), nullable=False),
    sa.Column("psf_fwhm", sa.Float, nullable=True),
    sa.Column("psf_e1", sa.Float, nullable=True),
    sa.Column("psf_e2", sa.Float, nullable=True),
    sa.Column("ellipticity", sa.Float, nullable=True),
    sa.Column("sky_mean", sa.Float, nullable=False),
    sa.Column("sky_rms", sa.Float, nullable=False),
    sa.Column("n_sources", sa.Integer, nullable=False),
    sa.Column("n_psf_stars", sa.Integer, nullable=False),
    sa.Column("zero_point", sa.Float, nullable=True),  # mag giving 1 ADU / s
    sa.Column("amplifiers", sa.Text, nullable=False),  # JSON: per amplifier
    sa.Column("measured_tai", sa.Float, nullable=False),
    sa.UniqueConstraint("image_name", "sensor", name="one_measurement_per_sensor"),
)
CALIBRATIONS = sa.Table(
    "calibration_products",
    METADATA,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("instrument", sa.String(32), nullable=False),
    sa.Column("sensor", sa.String(16), nullable=False),
    sa.Column("job_id", sa.String(40), nullable=False, index=True),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON: [[image, sensor, checksum], …]
    sa.Column("software_version", sa.String(32), nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("byte_size", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.String(32), nullable=False),
    sa.Column("checksum_algorithm", sa.String(16), nullable=False),
    sa.Column("created_tai", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    pipeline: str
    version: str
    query: str
    config: str  # JSON
    prereqs: str  # comma-separated job ids
    origin: str
    seq: int
    state: str
    tasks_done: int
    tasks_total: int
    message: str
    submitted_tai: float
    started_tai: float | None
    ended_tai: float | None
    result: str  # JSON


@dataclass(frozen=True)
class CalibrationRecord:
    path: str
    kind: str
    instrument: str
    sensor: str
    job_id: str
    inputs: str
    software_version: str
    config: str
    byte_size: int
    checksum: str
    checksum_algorithm: str
    created_tai: float


_JOB_COLUMNS = [f.name for f in fields(JobRecord)]
_UNFINISHED = ("queued", "waiting", "running")
_QC_FIELDS = {
    "psf_fwhm": "psfFwhm", "psf_e1": "psfE1", "psf_e2": "psfE2", "ellipticity": "ellipticity",
    "sky_mean": "skyMean", "sky_rms": "skyRms", "n_sources": "nSources",
    "n_psf_stars": "nPsfStars", "zero_point": "zeroPoint",
}  # fmt: skip


class BatchRecords:
    """OCS Batch's tables in a :class:`Catalog`'s database (created with the catalog)."""

    def __init__(self, catalog: Catalog) -> None:
        self.engine = catalog.engine

    def record_job(self, job: JobRecord) -> None:
        values = {name: getattr(job, name) for name in _JOB_COLUMNS}
        upsert(self.engine, JOBS, JOBS.c.job_id == job.job_id, values, f"job {job.job_id}")

    def job(self, job_id: str) -> JobRecord | None:
        rows = self._jobs(JOBS.c.job_id == job_id)
        return rows[0] if rows else None

    def jobs(self, limit: int = 100) -> list[JobRecord]:
        """The latest ``limit`` jobs, newest first."""
        return self._jobs(sa.true(), limit)

    def fail_unfinished(self, reason: str, now: float) -> list[JobRecord]:
        """Mark every job that was under way failed with ``reason``; those jobs, as now."""
        unfinished = self._jobs(JOBS.c.state.in_(_UNFINISHED))
        failed = [
            JobRecord(**{**_as_dict(job), "state": "failed", "message": reason, "ended_tai": now})
            for job in unfinished
        ]
        for job in failed:
            self.record_job(job)
        return failed

    def record_qc(self, job_id: str, metrics: dict[str, Any], now: float) -> None:
        """One detector's ``image-qc`` metrics (a re-measurement replaces the last)."""
        image, sensor = str(metrics["imageName"]), str(metrics["sensor"])
        values = {column: metrics.get(key) for column, key in _QC_FIELDS.items()}
        values.update(image_name=image, sensor=sensor, job_id=job_id, measured_tai=now,
                      amplifiers=json.dumps(metrics.get("amplifiers", [])))  # fmt: skip
        where = (QC_METRICS.c.image_name == image) & (QC_METRICS.c.sensor == sensor)
        upsert(self.engine, QC_METRICS, where, values, f"QC of {image} {sensor}")

    def qc_of(self, image: str) -> dict[str, dict[str, Any]]:
        """The image's measured detectors: sensor → metrics (ICD names)."""
        query = sa.select(QC_METRICS).where(QC_METRICS.c.image_name == image)
        result: dict[str, dict[str, Any]] = {}
        for row in self._rows(query):
            values = row._asdict()
            result[values["sensor"]] = {key: values[column] for column, key in _QC_FIELDS.items()}
        return result

    def record_calibration(self, product: CalibrationRecord) -> None:
        values = {f.name: getattr(product, f.name) for f in fields(CalibrationRecord)}
        upsert(self.engine, CALIBRATIONS, CALIBRATIONS.c.path == product.path, values, product.path)

    def calibrations_of(self, job_id: str) -> list[CalibrationRecord]:
        query = sa.select(CALIBRATIONS).where(CALIBRATIONS.c.job_id == job_id)
        return [CalibrationRecord(**row._asdict()) for row in self._rows(query)]

    # ---- plumbing --------------------------------------------------------------------

    def _jobs(self, where: sa.ColumnElement[bool], limit: int | None = None) -> list[JobRecord]:
        query = sa.select(*[JOBS.c[n] for n in _JOB_COLUMNS]).where(where)
        query = query.order_by(JOBS.c.submitted_tai.desc()).limit(limit)
        return [JobRecord(**row._asdict()) for row in self._rows(query)]

    def _rows(self, query: sa.Select[Any]) -> list[sa.Row[Any]]:
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(query))
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"cannot read the batch records: {exc}") from exc


def _as_dict(job: JobRecord) -> dict[str, Any]:
    return {name: getattr(job, name) for name in _JOB_COLUMNS}
