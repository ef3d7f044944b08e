"""image-qc throughput on Dask, against ``sep`` alone on the same detector.

    python benchmarks/qc_throughput.py [--images 4]

Writes a simulated ComCam archive (``--images`` OBJECT images x 9 detectors), then
measures, in this run:

* baseline: ``sep`` background + extraction of one detector in this process (what the
  issue measured at ~0.4 s per 4k x 4k detector on one core);
* ``image-qc`` of one detector in this process (the pipeline's own cost: overscan,
  assembly, per-amplifier sky, detection, PSF moments), as a ratio to the baseline;
* detectors per second through OCSBatch:0 on a LocalCluster of 1 and of 2 workers (the
  CSC, Dask and the file reads included), and the ratio of each to ``sep`` alone;
* the time from ``execute`` to ``jobResult`` for one ComCam image (9 detectors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sep
import yaml

from cscs.camera.geometry import Camera
from cscs.camera.sky import Pointing
from cscs.core.broker import EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.remote import Remote
from cscs.core.settings import Settings
from cscs.core.topics import CscAddress
from cscs.ocs_batch.csc import OcsBatchCsc
from cscs.ocs_batch.photometry import Reference
from cscs.ocs_batch.qc import assemble, measure_detector, overscan_stats
from cscs.ocs_batch.refcat import detector_reference, load_reference_catalog
from cscs.ocs_batch.tasks import read_raw
from cscs.repository import detector_id, exposure_id
from sim.testkit import SimulatedExposure, register_in_repository, simulated_archive

SENSORS = [d.name for d in Camera.COMCAM.detectors]


def sep_alone(segments: list[Any]) -> float:
    image, _ = assemble(segments, [overscan_stats(s)[0] for s in segments])
    started = time.perf_counter()
    background = sep.Background(image)
    sep.extract(image - background.back(), 5.0, err=background.globalrms)
    return time.perf_counter() - started


def pipeline_alone(segments: list[Any], reference: Reference | None) -> float:
    started = time.perf_counter()
    measure_detector("R22_S11", segments, Camera.COMCAM.pixel_scale, reference)
    return time.perf_counter() - started


async def through_the_csc(
    root: Path, state: Path, workers: int, query: str, bind: dict[str, Any]
) -> float:
    """Seconds from execute to the final ack of an image-qc job over ``query`` (a Butler
    expression; ``bind``: its values)."""
    config = state / "config" / "OCSBatch"
    config.mkdir(parents=True, exist_ok=True)
    values = {"archive_root": str(root), "workers": workers,
              "reference_catalog": str(root.parent / "refcat")}  # fmt: skip
    (config / "bench.yaml").write_text(yaml.safe_dump(values))
    settings = Settings(prefix="bench", state_dir=state, config_dir=state / "config")
    async with EmbeddedBroker("auto") as broker:
        csc = OcsBatchCsc(0, broker=broker.address, settings=settings)
        async with (
            csc,
            Bus(broker.address) as bus,
            Remote(bus, CscAddress("OCSBatch", 0, "bench")) as batch,
        ):
            await batch.command("start", {"configurationOverride": "bench"}, timeout=120)
            await batch.command("enable")
            # Warm the workers (imports, first reads) so the figure is the steady rate.
            one = bind | {"bench_detector": detector_id("LSSTComCam", "R22_S00")}
            await batch.command(
                "execute",
                {"pipeline": "image-qc", "dataQuery": f"{query} AND detector = bench_detector",
                 "config": json.dumps({"bind": one})},
                timeout=300,
            )  # fmt: skip
            started = time.perf_counter()
            await batch.command(
                "execute",
                {"pipeline": "image-qc", "dataQuery": query, "config": json.dumps({"bind": bind})},
                timeout=600,
            )
            elapsed = time.perf_counter() - started
            await batch.command("disable")
            await batch.command("standby")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cscs-qc-bench-") as directory:
        root = Path(directory) / "archive"
        print(f"writing {args.images} ComCam images x {len(SENSORS)} detectors ...", flush=True)
        field = Pointing(ra=10.0, dec=-30.0, rotation=0.0)
        exposures = [SimulatedExposure("OBJECT", 15.0, seeing=0.9, pointing=field)] * args.images
        refcat = root.parent / "refcat"
        rows = simulated_archive(root, Camera.COMCAM, exposures, SENSORS, reference_catalog=refcat)
        register_in_repository(root, rows)
        header, segments = read_raw(rows[0].path)
        catalog = load_reference_catalog(refcat)
        assert catalog is not None
        reference = detector_reference(header, catalog, Camera.COMCAM.pixel_scale, 2.0)
        baseline = statistics.median(sep_alone(segments) for _ in range(3))
        alone = statistics.median(pipeline_alone(segments, reference) for _ in range(3))
        print(
            f"sep alone (baseline): {baseline:.3f} s per detector ({1 / baseline:.2f} detectors/s)"
        )
        print(
            f"image-qc in process:  {alone:.3f} s per detector; {alone / baseline:.2f} x sep alone"
        )
        detectors = len(rows)
        for workers in (1, 2):
            seconds = asyncio.run(
                through_the_csc(
                    root,
                    Path(directory) / f"w{workers}",
                    workers,
                    "instrument = 'LSSTComCam' AND exposure.observation_type = 'object'",
                    {},
                )
            )
            rate = detectors / seconds
            print(
                f"OCSBatch, {workers} worker(s): {detectors} detectors in {seconds:.1f} s = "
                f"{rate:.2f} detectors/s; {rate * baseline:.2f} x sep alone on one core"
            )
        first = rows[0].image_name
        one = asyncio.run(
            through_the_csc(root, Path(directory) / "one", 2, "instrument = 'LSSTComCam' AND "
                            "exposure = bench_exposure", {"bench_exposure": exposure_id(first)})
        )  # fmt: skip
        print(f"execute -> jobResult for one ComCam image (9 detectors, 2 workers): {one:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
