"""OCS Batch's records in the archive catalog's database: its jobs, the QC metrics of each
detector, the detectors QC could not measure, and the calibration products with their
provenance.

Jobs are written at every change of state, so after a crash the next start finds the
ones that were under way and reports them failed ("the batch service restarted"):
never forgotten, never silently run again.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from cscs.catalog.catalog import FILES, METADATA, OBSERVATIONS, Catalog, CatalogError, upsert

__all__ = ["MAX_QC_ATTEMPTS", "BatchRecords", "CalibrationRecord", "JobRecord", "QcDue"]

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
#: Detectors whose QC failed (a new table: made by ``create_all`` on any catalog). QC's
#: catch-up measures an image's detectors that have no ``qc_metrics`` row; this is what
#: keeps one that cannot be measured (an unreadable file) from being tried for ever.
QC_ATTEMPTS = sa.Table(
    "qc_attempts",
    METADATA,
    sa.Column("image_name", sa.String(64), nullable=False),
    sa.Column("sensor", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),  # MAX_QC_ATTEMPTS: given up
    sa.Column("job_id", sa.String(40), nullable=False),  # the last attempt's
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("attempted_tai", sa.Float, nullable=False),
    sa.UniqueConstraint("image_name", "sensor", name="one_attempt_record_per_sensor"),
)
#: A detector whose own task failed is given up at once; one whose job failed around it
#: (a deadline, a lost engine) is tried this many times in all.
MAX_QC_ATTEMPTS = 3
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


@dataclass(frozen=True)
class QcDue:
    """An archived image with detectors that have no QC stage yet."""

    image_name: str
    instrument: str
    exposure_start_tai: float
    sensors: tuple[str, ...]


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

    def qc_measured_after(
        self, instrument: str, after: tuple[float, str], limit: int
    ) -> list[tuple[float, str]]:
        """The instrument's images with QC, by when their QC was last measured: the
        ``limit`` first after ``after`` (the last page's last ``(measured_tai,
        image)``), each as ``(measured_tai, image)``. How the OODS catches up ConsDB's
        quick-look with what was measured while it was away, in bounded steps."""
        measured = sa.func.max(QC_METRICS.c.measured_tai).label("measured")
        joined = QC_METRICS.join(FILES, (FILES.c.image_name == QC_METRICS.c.image_name)
                                 & (FILES.c.sensor == QC_METRICS.c.sensor))  # fmt: skip
        query = (
            sa.select(measured, QC_METRICS.c.image_name).select_from(joined)
            .where(FILES.c.instrument == instrument)
            .group_by(QC_METRICS.c.image_name)
            .having(sa.tuple_(measured, QC_METRICS.c.image_name)
                    > sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
            .order_by(measured, QC_METRICS.c.image_name).limit(limit)
        )  # fmt: skip
        return [(float(row.measured), str(row.image_name)) for row in self._rows(query)]

    def record_qc_failure(
        self,
        detectors: Iterable[tuple[str, str]],
        job_id: str,
        reason: str,
        now: float,
        *,
        final: bool,
    ) -> None:
        """Detectors' QC failed, (image, sensor) each, in one transaction: ``final`` (its
        own task failed: the file cannot be measured) gives them up; otherwise (their
        job failed around them) one more attempt each."""
        try:
            with self.engine.begin() as connection:
                for image, sensor in detectors:
                    where = (QC_ATTEMPTS.c.image_name == image) & (QC_ATTEMPTS.c.sensor == sensor)
                    before = connection.execute(sa.select(QC_ATTEMPTS.c.attempts).where(where))
                    attempts = MAX_QC_ATTEMPTS if final else (before.scalar() or 0) + 1
                    values = {"image_name": image, "sensor": sensor, "job_id": job_id,
                              "attempts": min(attempts, MAX_QC_ATTEMPTS),
                              "reason": reason[:2000], "attempted_tai": now}  # fmt: skip
                    updated = connection.execute(sa.update(QC_ATTEMPTS).where(where).values(values))
                    if not updated.rowcount:
                        connection.execute(sa.insert(QC_ATTEMPTS).values(values))
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"cannot record a failed QC of job {job_id}: {exc}") from exc

    def qc_due(
        self,
        *,
        image_types: Collection[str],
        instruments: Collection[str],
        sensors: Collection[str],
        since_tai: float,
        archived_before_tai: float,
        exclude: Collection[str],
        limit: int,
    ) -> list[QcDue]:
        """Archived images of ``image_types`` (from their headers) with detectors that have
        neither QC metrics nor a given-up failure, oldest exposure first, at most
        ``limit`` images; each with those detectors. Only ``instruments``, ``sensors``
        (empty: all), exposures since ``since_tai``, files archived before
        ``archived_before_tai``, images not in ``exclude`` (being measured already).

        One statement: the detectors due, joined to the first ``limit`` images due. The
        QC and attempt rows are found through their unique (image, sensor) indexes."""
        if not image_types or not instruments or limit < 1:
            return []
        conditions = [
            OBSERVATIONS.c.image_type.in_(sorted(image_types)),
            FILES.c.instrument.in_(sorted(instruments)),
            FILES.c.exposure_start_tai >= since_tai,
            FILES.c.archived_tai <= archived_before_tai,
            QC_METRICS.c.image_name.is_(None),
            sa.or_(QC_ATTEMPTS.c.attempts.is_(None), QC_ATTEMPTS.c.attempts < MAX_QC_ATTEMPTS),
        ]
        if sensors:
            conditions.append(FILES.c.sensor.in_(sorted(sensors)))
        if exclude:
            conditions.append(FILES.c.image_name.not_in(sorted(exclude)))
        joined = (
            FILES.join(OBSERVATIONS, OBSERVATIONS.c.image_name == FILES.c.image_name)
            .outerjoin(QC_METRICS, (QC_METRICS.c.image_name == FILES.c.image_name)
                       & (QC_METRICS.c.sensor == FILES.c.sensor))
            .outerjoin(QC_ATTEMPTS, (QC_ATTEMPTS.c.image_name == FILES.c.image_name)
                       & (QC_ATTEMPTS.c.sensor == FILES.c.sensor))
        )  # fmt: skip
        first = sa.func.min(FILES.c.exposure_start_tai).label("first")
        images = (
            sa.select(FILES.c.image_name.label("image"), first)
            .select_from(joined).where(*conditions).group_by(FILES.c.image_name)
            .order_by(first, FILES.c.image_name).limit(limit)
        ).subquery()  # fmt: skip
        query = (
            sa.select(FILES.c.image_name, FILES.c.instrument, images.c.first, FILES.c.sensor)
            .select_from(joined.join(images, images.c.image == FILES.c.image_name))
            .where(*conditions)
            .order_by(images.c.first, FILES.c.image_name, FILES.c.sensor)
        )
        due: dict[str, QcDue] = {}
        for row in self._rows(query):
            image, held = str(row.image_name), due.get(str(row.image_name))
            sensors = (held.sensors if held else ()) + (str(row.sensor),)
            due[image] = QcDue(image, str(row.instrument), float(row.first), sensors)
        return list(due.values())

    def qc_origins(self, image: str) -> set[str]:
        """The origins of the jobs that measured the image's detectors now in the
        catalog (``auto_qc``, ``qc_catch_up``, a commander's): empty if none is."""
        query = (
            sa.select(sa.func.coalesce(JOBS.c.origin, "").label("origin")).distinct()
            .select_from(QC_METRICS.outerjoin(JOBS, JOBS.c.job_id == QC_METRICS.c.job_id))
            .where(QC_METRICS.c.image_name == image)
        )  # fmt: skip
        return {str(row.origin) for row in self._rows(query)}  # "": its job is not recorded

    def record_calibration(self, product: CalibrationRecord) -> None:
        values = {f.name: getattr(product, f.name) for f in fields(CalibrationRecord)}
        upsert(self.engine, CALIBRATIONS, CALIBRATIONS.c.path == product.path, values, product.path)

    def calibrations_of(self, job_id: str) -> list[CalibrationRecord]:
        query = sa.select(CALIBRATIONS).where(CALIBRATIONS.c.job_id == job_id)
        return [CalibrationRecord(**row._asdict()) for row in self._rows(query)]

    def recent_calibrations(self, limit: int) -> list[CalibrationRecord]:
        """The newest ``limit`` calibration products, newest first."""
        query = sa.select(CALIBRATIONS).order_by(CALIBRATIONS.c.created_tai.desc()).limit(limit)
        return [CalibrationRecord(**row._asdict()) for row in self._rows(query)]

    def recent_qc(self, limit: int) -> list[tuple[str, str, str]]:
        """(instrument, image, sensor) of the newest ``limit`` detectors measured, newest
        first (those whose file the catalog has)."""
        query = (
            sa.select(FILES.c.instrument, QC_METRICS.c.image_name, QC_METRICS.c.sensor)
            .select_from(QC_METRICS.join(FILES, (FILES.c.image_name == QC_METRICS.c.image_name)
                                         & (FILES.c.sensor == QC_METRICS.c.sensor)))
            .order_by(QC_METRICS.c.measured_tai.desc()).limit(limit)
        )  # fmt: skip
        return [(str(r.instrument), str(r.image_name), str(r.sensor)) for r in self._rows(query)]

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
