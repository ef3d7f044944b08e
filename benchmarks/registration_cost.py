"""What registering an image in the Butler repository costs, next to writing it.

    python -m benchmarks.registration_cost [--runs 3] [--images 4] [--dir DIR] [--lsstcam-full]

For each camera shape (ComCam: 9 files per image; LSSTCam's 3 rafts: 27 files; with
``--lsstcam-full`` also the whole of LSSTCam, 189 files, ~14 GB per image), each run
makes a fresh archive (a temporary directory under ``--dir``), then for each of
``--images`` images (full-size pixels):

* baseline: the archiver's own code writes the image's files (``ArchiveFiles.write``,
  as the Archiver does: FITS, checksums, ``fsync``, rename), header in hand;
* ``Repository.register`` of those files (each primary header read, dimension records
  synced, the datasets ingested in place, one transaction), and again (a redelivery or
  a re-registration: nothing new).

The first image of a run also makes the instrument's and detectors' records: it is
shown apart, the others give the median. Printed per run and over the runs (median,
range): wall seconds per image and ms per file, CPU seconds per image, and the ratio of
registration to the write. Registering reads only the primary header's blocks, so what
it costs does not depend on the pixels; the files are deleted after each image to keep
the disk free (``--lsstcam-full`` needs ~17 GB free under ``--dir``). Then what a
component pays at start: ``import lsst.daf.butler`` in a fresh interpreter (beside
``import astropy.io.fits``, which the archiver pays anyway), ``Repository.open`` of a
new and of an existing archive.

``--profile`` prints, instead, the functions where registering spends its time (the
images after the first, of each shape).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cscs.archiver.writer import FILE_BYTES, ArchiveFiles
from cscs.camera.geometry import SEGMENT_COLS, SEGMENT_ROWS, SEGMENTS, Camera
from cscs.daq.reader import SensorPixels
from cscs.repository import Repository
from tests.support.raws import header_document

KEYS = ("write", "write_cpu", "register", "register_cpu", "again", "again_cpu")


@dataclass(frozen=True)
class Shape:
    """An image's files: a camera and which of its detectors."""

    label: str
    camera: Camera
    sensors: list[str]


def shapes(full: bool) -> list[Shape]:
    lsstcam = [d.name for d in Camera.LSSTCAM.detectors]
    chosen = [
        Shape("ComCam", Camera.COMCAM, [d.name for d in Camera.COMCAM.detectors]),
        Shape("LSSTCam 3 rafts", Camera.LSSTCAM, lsstcam[:27]),
    ]
    if full:
        chosen.append(Shape("LSSTCam", Camera.LSSTCAM, lsstcam))
    return chosen


def timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds (this process) of ``work()``, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def one_run(
    directory: Path, images: int, shape: Shape, profile: cProfile.Profile | None = None
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="registration-", dir=directory))
    rng = np.random.default_rng(1)
    segments = tuple(rng.integers(18_000, 22_000, (SEGMENT_ROWS, SEGMENT_COLS), np.int32)
                     for _ in SEGMENTS)  # fmt: skip
    try:
        open_new, _, repo = timed(lambda: Repository.open(root))
        files = ArchiveFiles(root, shape.camera)
        rows = []
        for seq in range(1, images + 1):
            image = f"{shape.camera.code}_O_20261121_{seq:06d}"
            document = header_document(shape.camera, image, shape.sensors)
            pixels = [SensorPixels.trusted(image, s, segments)
                      for s in shape.sensors]  # fmt: skip
            write_wall, write_cpu, written = timed(
                lambda: [files.write(p, document).path for p in pixels]  # noqa: B023
            )
            if profile is not None and seq > 1:
                profile.enable()
            reg_wall, reg_cpu, done = timed(lambda: repo.register(written))  # noqa: B023
            if profile is not None:
                profile.disable()
            if done.refused or len(done.registered) != len(shape.sensors):
                raise RuntimeError(f"{image} not registered whole: {done.refused}")
            again_wall, again_cpu, _ = timed(lambda: repo.register(written))  # noqa: B023
            rows.append(dict(zip(KEYS, (write_wall, write_cpu, reg_wall, reg_cpu, again_wall,
                                        again_cpu), strict=True)))  # fmt: skip
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


def report(shape: Shape, runs: list[dict[str, Any]], images: int) -> None:
    n = len(shape.sensors)
    print(f"\n{shape.label}, {n} files per image, {images - 1} images x {len(runs)} runs "
          "(median of each run's median, [range over runs]):")  # fmt: skip
    per_run = {key: [statistics.median(r[key] for r in run["rows"]) for run in runs]
               for key in KEYS}  # fmt: skip
    ratios = [r / w for r, w in zip(per_run["register"], per_run["write"], strict=True)]
    cpu_ratios = [r / w for r, w in zip(per_run["register_cpu"], per_run["write_cpu"],
                                         strict=True)]  # fmt: skip
    again_ratios = [a / r for a, r in zip(per_run["again"], per_run["register"], strict=True)]
    per_file = 1000 / n
    print(f"  archive write (baseline)     {spread(per_run['write'])} per image")
    print(f"  register                     {spread(per_run['register'])} per image")
    print(f"  register                     {spread(per_run['register'], per_file, 'ms')} per file")
    print(f"  register, CPU                {spread(per_run['register_cpu'])} per image")
    print(f"  register again               {spread(per_run['again'])} per image")
    print(f"  register again               {spread(per_run['again'], per_file, 'ms')} per file")
    print(f"  register again, CPU          {spread(per_run['again_cpu'])} per image")
    print(f"  register again / register    {spread(again_ratios, unit='x')}")
    print(f"  register / write, wall       {spread(ratios, unit='x')}")
    print(f"  register / write, CPU        {spread(cpu_ratios, unit='x')}")
    print(f"  first image (instrument)     {spread([r['first']['register'] for r in runs])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--lsstcam-full",
        action="store_true",
        help="also the whole of LSSTCam: 189 files, ~14 GB per image",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print where registering spends its time, not the figures",
    )
    args = parser.parse_args()
    if args.runs < 1 or args.images < 2:
        parser.error("--runs at least 1, --images at least 2")
    chosen = shapes(args.lsstcam_full)
    needed = max(len(s.sensors) for s in chosen) * FILE_BYTES * 1.2
    if shutil.disk_usage(args.dir).free < needed:
        parser.error(f"{args.dir} has less than the {needed / 1e9:.1f} GB an image needs")
    if args.profile:
        for shape in chosen:
            profile = cProfile.Profile()
            one_run(args.dir, args.images, shape, profile)
            print(f"\n{shape.label}: Repository.register, {args.images - 1} images")
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        return
    results: dict[str, list[dict[str, Any]]] = {}
    for shape in chosen:
        for run in range(1, args.runs + 1):
            result = one_run(args.dir, args.images, shape)
            results.setdefault(shape.label, []).append(result)
            med = {k: statistics.median(r[k] for r in result["rows"]) for k in KEYS}
            print(f"{shape.label} run {run}: write {med['write']:.3f} s/image, register "
                  f"{med['register']:.3f} s/image "
                  f"({med['register'] / len(shape.sensors) * 1000:.1f} ms/file), again "
                  f"{med['again']:.3f} s; ratio register/write "
                  f"{med['register'] / med['write']:.2f}; first image register "
                  f"{result['first']['register']:.3f} s", flush=True)  # fmt: skip
    for shape in chosen:
        report(shape, results[shape.label], args.images)
    runs = results[chosen[0].label]
    print("\nAt a component's start:")
    butler = [import_seconds("lsst.daf.butler") for _ in range(args.runs)]
    fits = [import_seconds("astropy.io.fits") for _ in range(args.runs)]
    print(f"  import lsst.daf.butler       {spread(butler)}")
    print(f"  import astropy.io.fits       {spread(fits)} (baseline)")
    print(f"  Repository.open, new         {spread([r['open_new'] for r in runs])}")
    print(f"  Repository.open, existing    {spread([r['open_existing'] for r in runs])}")


if __name__ == "__main__":
    main()
