"""From a job's pipeline, configuration and selected files to the Dask tasks that do it:
pure decisions, tested without a cluster.

``image-qc``: one task per file (detector). ``master-*``: one task per detector, over
every selected file of it, writing
``{archive}/{instrument}/calib/{kind}/{jobId}/{kind}_{RXX}_{SXX}.fits``. A job whose
files or configuration cannot make sense fails here, before anything runs, with the
reason (:class:`PlanError`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cscs.camera.files import path_under
from cscs.camera.geometry import Camera
from cscs.catalog import ArchivedFile
from cscs.ocs_batch.interface import PIPELINES
from cscs.ocs_batch.tasks import CalibrationTask, QcTask, combine_task, qc_task

__all__ = ["CONFIG_KEYS", "JobPlan", "PlanError", "plan_job"]

_CAMERAS = {camera.instrument: camera for camera in Camera}
#: What each pipeline's ``config`` may hold; anything else is refused (a typo would
#: otherwise be silently ignored).
#: ``bind``, the data query's bind values (:mod:`cscs.ocs_batch.selection`), is every
#: pipeline's.
CONFIG_KEYS: Mapping[str, frozenset[str]] = {
    "image-qc": frozenset({"bind", "matchRadius"}),
    "master-bias": frozenset({"bind", "nsigma"}),
    "master-dark": frozenset({"bind", "nsigma", "biasJob"}),
    "master-flat": frozenset({"bind", "nsigma", "biasJob"}),
}
_MAX_INPUTS = 999  # per detector of a calibration product (the provenance cards' width)


class PlanError(ValueError):
    """The job cannot be planned; the message is the reason, for the ack."""


@dataclass(frozen=True)
class JobPlan:
    function: Callable[[Any], dict[str, Any]]
    tasks: list[Any]
    labels: list[str]  # one per task, for messages and Dask keys: "R22_S00" or "image R22_S00"
    outputs: list[str]  # calibration products' final paths (published when all succeed)
    instrument: str
    files: list[ArchivedFile]  # what the query selected (to plan again with a master bias)


def plan_job(
    job_id: str,
    pipeline: str,
    config: Mapping[str, Any],
    files: list[ArchivedFile],
    archive_root: Path,
    software_version: str,
    bias_products: Mapping[str, str] | None = None,
    reference_catalog: str = "",
) -> JobPlan:
    """The tasks of a job over ``files``; ``bias_products``: sensor → master bias path,
    from the job named by ``config["biasJob"]`` (None: not known yet, when the job is
    checked at ``execute``; it is planned again when it starts); ``reference_catalog``:
    the directory ``image-qc`` measures zero points against (empty: none)."""
    if pipeline not in PIPELINES:
        raise PlanError(f"unknown pipeline {pipeline!r}; one of {', '.join(PIPELINES)}")
    unknown = sorted(set(config) - CONFIG_KEYS[pipeline])
    if unknown:
        allowed = ", ".join(sorted(CONFIG_KEYS[pipeline])) or "none"
        raise PlanError(f"{pipeline} has no config key {', '.join(unknown)} (allowed: {allowed})")
    if not files:
        raise PlanError("the data query selects no archived file")
    instruments = sorted({f.instrument for f in files})
    camera = _CAMERAS.get(instruments[0])
    if len(instruments) > 1 or camera is None:
        raise PlanError(f"a job processes one instrument's images, not {', '.join(instruments)}")
    if pipeline == "image-qc":
        match_radius = config.get("matchRadius", 2.0)
        if not _number_in(match_radius, 0.1, 30.0):
            raise PlanError(f"matchRadius must be 0.1 to 30 arcsec, not {match_radius!r}")
        tasks = [
            QcTask(f.image_name, f.sensor, f.path, camera.pixel_scale, reference_catalog,
                   float(match_radius))
            for f in files
        ]  # fmt: skip
        labels = [f"{f.image_name} {f.sensor}" for f in files]
        return JobPlan(qc_task, list(tasks), labels, [], camera.instrument, files)
    return _calibration_plan(
        job_id, pipeline.removeprefix("master-"), config, files, camera, archive_root,
        software_version, bias_products,
    )  # fmt: skip


def _calibration_plan(
    job_id: str,
    kind: str,
    config: Mapping[str, Any],
    files: list[ArchivedFile],
    camera: Camera,
    archive_root: Path,
    software_version: str,
    bias_products: Mapping[str, str] | None,
) -> JobPlan:
    nsigma = config.get("nsigma", 4.0)
    if not _number_in(nsigma, 1.0, 100.0):
        raise PlanError(f"nsigma must be a number from 1 to 100, not {nsigma!r}")
    by_sensor: dict[str, list[ArchivedFile]] = defaultdict(list)
    for file in files:
        by_sensor[file.sensor].append(file)
    tasks: list[Any] = []
    outputs: list[str] = []
    for sensor, inputs in sorted(by_sensor.items()):
        if len(inputs) > _MAX_INPUTS:
            raise PlanError(f"{sensor}: {len(inputs)} inputs; at most {_MAX_INPUTS} per product")
        bias = ""
        if "biasJob" in config and bias_products is not None:
            bias = bias_products.get(sensor, "")
            if not bias:
                raise PlanError(f"job {config['biasJob']} made no master bias for {sensor}")
        detector = camera.detector(sensor)
        output = path_under(
            archive_root, camera.instrument, "calib", kind, job_id,
            f"{kind}_{detector.raft}_{detector.slot}.fits",
        )  # fmt: skip
        tasks.append(
            CalibrationTask(
                kind=kind,
                sensor=sensor,
                inputs=tuple(f.path for f in inputs),
                checksums=tuple(f"{f.checksum_algorithm}:{f.checksum}" for f in inputs),
                output=str(output),
                job_id=job_id,
                software_version=software_version,
                config=json.dumps(dict(config)),
                bias=bias,
                nsigma=float(nsigma),
            )
        )
        outputs.append(str(output))
    return JobPlan(combine_task, tasks, sorted(by_sensor), outputs, camera.instrument, files)


def _number_in(value: Any, low: float, high: float) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and low <= value <= high
