"""What runs on a Dask worker: one task per detector (or per detector's stack, for a
calibration product). A task reads the archived files itself (the archive is a shared
file system), so no pixels pass through the scheduler or the CSC; it returns only a
small dict of results.

Every function here is importable by name and takes plain values, so that Dask sends a
reference, not code, and a task killed with its worker runs again elsewhere the same.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cscs.camera.fits import Card, write_with_fitsio
from cscs.camera.geometry import SEGMENTS
from cscs.cluster.identity import worker_name
from cscs.ocs_batch.combine import CalibrationInput, combine_detector
from cscs.ocs_batch.qc import measure_detector
from cscs.ocs_batch.refcat import detector_reference, load_reference_catalog

__all__ = [
    "CalibrationTask",
    "QcTask",
    "combine_task",
    "publish_staged",
    "qc_task",
    "read_raw",
    "read_segment",
    "remove_stale_staged",
]

_STAGED = ".staged"


def read_raw(path: str) -> tuple[dict[str, Any], list[npt.NDArray[np.int32]]]:
    """An archived raw file's primary header (keyword → value) and its 16 segments in
    file order; OSError or ValueError naming the file if it is not one."""
    import fitsio

    with fitsio.FITS(path) as hdus:
        header = {r["name"]: r["value"] for r in hdus[0].read_header().records()}
        names = {hdu.get_extname(): hdu for hdu in hdus[1:]}
        missing = [s.name for s in SEGMENTS if s.name not in names]
        if missing:
            raise ValueError(f"{path}: not a raw file: no {', '.join(missing[:3])} extension")
        segments = [np.asarray(names[s.name].read(), dtype=np.int32) for s in SEGMENTS]
    return header, segments


def read_segment(path: str, index: int) -> npt.NDArray[np.int32]:
    """One segment (``SEGMENTS[index]``) of an archived raw file."""
    import fitsio

    with fitsio.FITS(path) as hdus:
        return np.asarray(hdus[SEGMENTS[index].name].read(), dtype=np.int32)


def _primary_header(path: str) -> dict[str, Any]:
    import fitsio

    return {r["name"]: r["value"] for r in fitsio.read_header(path, ext=0).records()}


@dataclass(frozen=True)
class QcTask:
    image: str
    sensor: str
    path: str
    pixel_scale: float  # arcsec / pixel
    reference_catalog: str = ""  # a directory of reference shards; empty: no zero point
    match_radius: float = 2.0  # arcsec, detection to reference star


def qc_task(task: QcTask) -> dict[str, Any]:
    """``image-qc`` of one archived file: the metrics as the DM-internal payload."""
    started = time.perf_counter()
    header, segments = read_raw(task.path)
    reference, warning = None, ""
    if task.reference_catalog:
        # A broken reference catalog costs the zero point, not the other metrics.
        try:
            catalog = load_reference_catalog(Path(task.reference_catalog))
        except ValueError as exc:
            catalog, warning = None, f"no zero point: {exc}"
        if catalog is not None:
            reference = detector_reference(header, catalog, task.pixel_scale, task.match_radius)
    metrics = measure_detector(task.sensor, segments, task.pixel_scale, reference).as_json()
    if warning:
        metrics["warning"] = warning[:500]
    metrics.update(
        imageName=task.image,
        imageType=str(header.get("IMGTYPE", "")),
        exposureTime=header.get("EXPTIME"),
        worker=worker_name(),
        seconds=round(time.perf_counter() - started, 3),
    )
    return metrics


@dataclass(frozen=True)
class CalibrationTask:
    kind: str  # bias, dark, flat
    sensor: str
    inputs: tuple[str, ...]  # archived raw files of this detector
    checksums: tuple[str, ...]  # "algorithm:hex", as the catalog has them: provenance
    output: str  # the product's final path
    job_id: str
    software_version: str
    config: str  # the job's configuration, JSON
    bias: str = ""  # a master bias to subtract first (dark, flat); empty: none
    nsigma: float = 4.0  # outlier rejection of the combination


def combine_task(task: CalibrationTask) -> dict[str, Any]:
    """Combine one detector's inputs and write the product *staged* beside its final
    name (``.{name}.staged``, whole and checksummed): only the CSC publishes it, once
    the whole job succeeded, so an aborted or failed job leaves no product behind."""
    started = time.perf_counter()

    def exposures() -> Any:
        for path in task.inputs:
            header = _primary_header(path)
            dark_time = header.get("DARKTIME", header.get("EXPTIME", 0.0))
            yield CalibrationInput(functools.partial(read_segment, path), float(dark_time or 0.0))

    bias = None
    if task.bias:
        import fitsio

        bias = np.asarray(fitsio.read(task.bias, ext=1), dtype=np.float32)
    product = combine_detector(task.kind, exposures(), bias, task.nsigma)
    final = Path(task.output)
    written = write_with_fitsio(
        staged_path(final), _provenance(task, final), [(_image_cards(task), product)]
    )
    return {
        "sensor": task.sensor,
        "output": str(final),
        "byteSize": written.byte_size,
        "checkSum": written.checksum,
        "checkSumAlgorithm": written.checksum_algorithm,
        "inputs": [[Path(p).name, c] for p, c in zip(task.inputs, task.checksums, strict=True)],
        "worker": worker_name(),
        "seconds": round(time.perf_counter() - started, 3),
    }


def staged_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{_STAGED}")


def publish_staged(outputs: Sequence[str]) -> None:
    """Give each staged product its final name (a rename each: all or, after a crash
    half-way, the rest on a rerun). FileNotFoundError if one is not staged."""
    for output in outputs:
        final = Path(output)
        os.replace(staged_path(final), final)


def remove_stale_staged(archive_root: Path) -> int:
    """Delete staged products no job will publish (a task still running when its job was
    aborted writes one after the end); how many. Only when no job runs (at ``start``)."""
    count = 0
    for pattern in (f".*{_STAGED}", ".*.partial"):  # staged; or a writer killed mid-file
        for path in archive_root.glob(f"*/calib/*/*/{pattern}"):
            path.unlink(missing_ok=True)
            count += 1
    return count


def _provenance(task: CalibrationTask, final: Path) -> list[Card]:
    cards: list[Card] = [
        ("OBSTYPE", task.kind.upper(), "calibration product"),
        ("FILENAME", final.name, ""),
        ("CALIBJOB", task.job_id, "OCSBatch job that made it"),
        ("SOFTVER", task.software_version, "cscs version"),
        ("NCOMBINE", len(task.inputs), "inputs combined"),
        ("BIASFILE", Path(task.bias).name if task.bias else "", "master bias subtracted"),
    ]
    for number, (path, checksum) in enumerate(zip(task.inputs, task.checksums, strict=True)):
        cards.append((f"INPUT{number:03d}", Path(path).name[:68], ""))
        cards.append((f"INSUM{number:03d}", checksum, "input file checksum"))
    config = json.dumps(json.loads(task.config or "{}"), sort_keys=True)  # ASCII
    for number, piece in enumerate(_card_pieces(config)[:_CONFIG_CARDS]):
        cards.append((f"CONFIG{number:02d}", piece, ""))
    return cards


_CONFIG_CARDS = 10  # CONFIG00 … CONFIG09: the job's configuration, in pieces
_CARD_TEXT = 68  # characters of a string value in one card, quotes doubled included


def _card_pieces(text: str) -> list[str]:
    """``text`` cut into values that each fit one card as they are written (a quote is
    written twice), without comment: a longer value would take the long-string
    convention (``CONTINUE``), which fitsverify flags without ``LONGSTRN``."""
    pieces: list[str] = []
    piece, width = "", 0
    for character in text:
        size = 2 if character == "'" else 1
        if width + size > _CARD_TEXT:
            pieces.append(piece)
            piece, width = "", 0
        piece += character
        width += size
    if piece:
        pieces.append(piece)
    return pieces


def _image_cards(task: CalibrationTask) -> list[Card]:
    units = {"bias": "adu", "dark": "adu/s", "flat": ""}[task.kind]
    return [("EXTNAME", task.kind.upper(), ""), ("BUNIT", units, ""), ("DETNAME", task.sensor, "")]
