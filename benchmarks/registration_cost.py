"""What registering an image in the Butler repository costs, next to writing it.

    python -m benchmarks.registration_cost [--runs 3] [--images 5] [--dir DIR]

Each run makes a fresh archive (a temporary directory under ``--dir``), then for each
of ``--images`` ComCam images (9 detectors, full-size pixels):

* baseline: the archiver's own code writes the image's 9 files (``ArchiveFiles.write``,
  as the Archiver does: FITS, checksums, ``fsync``, rename), header in hand;
* ``Repository.register`` of those 9 files (each header read, dimension records synced,
  9 datasets ingested in place, one transaction), and again (a redelivery: nothing new).

The first image of a run also makes the instrument's and detectors' records: it is
shown apart, the others give the median. Printed per run and over the runs (median,
range): wall seconds per image and per file, CPU seconds per image, and the ratio of
registration to the write. Then what a component pays at start: ``import
lsst.daf.butler`` in a fresh interpreter (beside ``import astropy.io.fits``, which the
archiver pays anyway), ``Repository.open`` of a new and of an existing archive.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cscs.archiver.writer import ArchiveFiles
from cscs.camera.geometry import SEGMENT_COLS, SEGMENT_ROWS, SEGMENTS, Camera
from cscs.daq.reader import SensorPixels
from cscs.repository import Repository
from tests.support.raws import header_document

CAMERA = Camera.COMCAM
SENSORS = [d.name for d in CAMERA.detectors]


def timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds (this process) of ``work()``, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def one_run(directory: Path, images: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="registration-", dir=directory))
    rng = np.random.default_rng(1)
    segments = tuple(rng.integers(18_000, 22_000, (SEGMENT_ROWS, SEGMENT_COLS), np.int32)
                     for _ in SEGMENTS)  # fmt: skip
    try:
        open_new, _, repo = timed(lambda: Repository.open(root))
        files = ArchiveFiles(root, CAMERA)
        rows = []
        for seq in range(1, images + 1):
            image = f"CC_O_20261121_{seq:06d}"
            document = header_document(CAMERA, image, SENSORS)
            pixels = [SensorPixels(image, s, segments, ("",) * len(SEGMENTS)) for s in SENSORS]
            write_wall, write_cpu, written = timed(
                lambda: [files.write(p, document).path for p in pixels]  # noqa: B023
            )
            reg_wall, reg_cpu, done = timed(lambda: repo.register(written))  # noqa: B023
            if done.refused or len(done.registered) != len(SENSORS):
                raise RuntimeError(f"{image} not registered whole: {done.refused}")
            again_wall, _, _ = timed(lambda: repo.register(written))  # noqa: B023
            rows.append({"write": write_wall, "write_cpu": write_cpu, "register": reg_wall,
                         "register_cpu": reg_cpu, "again": again_wall})  # fmt: skip
            for path in written:  # the pixels are not needed any more: keep the disk free
                path.unlink()
        repo.close()
        open_existing, _, again = timed(lambda: Repository.open(root))
        again.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"first": rows[0], "rows": rows[1:], "open_new": open_new,
            "open_existing": open_existing}  # fmt: skip


def import_seconds(module: str) -> float:
    """``import module`` in a fresh interpreter, by its own clock."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def spread(values: list[float], scale: float = 1.0, unit: str = "s") -> str:
    shown = [v * scale for v in values]
    return (f"{statistics.median(shown):8.3f} {unit} "
            f"[{min(shown):.3f} .. {max(shown):.3f}]")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if args.runs < 1 or args.images < 2:
        parser.error("--runs at least 1, --images at least 2")
    runs = []
    for run in range(1, args.runs + 1):
        result = one_run(args.dir, args.images)
        runs.append(result)
        med = {k: statistics.median(r[k] for r in result["rows"]) for k in result["rows"][0]}
        print(f"run {run}: write {med['write']:.3f} s/image, register {med['register']:.3f} "
              f"s/image ({med['register'] / 9 * 1000:.1f} ms/file), again "
              f"{med['again']:.3f} s; ratio register/write {med['register'] / med['write']:.2f}; "
              f"first image register {result['first']['register']:.3f} s")  # fmt: skip
    print(
        f"\nComCam, 9 files per image, {args.images - 1} images x {args.runs} runs "
        "(median of each run's median, [range over runs]):"
    )
    per_run: dict[str, list[float]] = {}
    for key in ("write", "write_cpu", "register", "register_cpu", "again"):
        per_run[key] = [statistics.median(r[key] for r in result["rows"]) for result in runs]
    ratios = [r / w for r, w in zip(per_run["register"], per_run["write"], strict=True)]
    cpu_ratios = [r / w for r, w in zip(per_run["register_cpu"], per_run["write_cpu"],
                                         strict=True)]  # fmt: skip
    print(f"  archive write (baseline)     {spread(per_run['write'])} per image")
    print(f"  register                     {spread(per_run['register'])} per image")
    print(f"  register                     {spread(per_run['register'], 1000 / 9, 'ms')} per file")
    print(f"  register again (redelivery)  {spread(per_run['again'])} per image")
    print(f"  register / write, wall       {spread(ratios, unit='x')}")
    print(f"  register / write, CPU        {spread(cpu_ratios, unit='x')}")
    print(f"  first image (instrument)     {spread([r['first']['register'] for r in runs])}")
    print("\nAt a component's start:")
    butler = [import_seconds("lsst.daf.butler") for _ in range(args.runs)]
    fits = [import_seconds("astropy.io.fits") for _ in range(args.runs)]
    print(f"  import lsst.daf.butler       {spread(butler)}")
    print(f"  import astropy.io.fits       {spread(fits)} (baseline)")
    print(f"  Repository.open, new         {spread([r['open_new'] for r in runs])}")
    print(f"  Repository.open, existing    {spread([r['open_existing'] for r in runs])}")


if __name__ == "__main__":
    main()
