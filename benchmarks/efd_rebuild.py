"""Time to rebuild one ComCam image's header from the EFD, against the same rebuild with
the store's answers already in hand (the baseline: the replay and the header's making,
which the live path does too, with no store to read), in the same run.

    python -m benchmarks.efd_rebuild [--runs 7]

The EFD holds an hour of a night: the mount at 10 Hz, the dome and the weather at 1 Hz,
the telescope's target and filter, the camera's focal-plane summary and one image's
events (a 30 s exposure in the middle of the hour): 43 200 records. Each run rebuilds
that image's header into an empty directory (so it is written, not found complete);
the first rebuild of the process (astropy's first coordinate transform, ~1 s, which the
header service pays at ``start``) is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from cscs.camera.geometry import camera_for_index
from cscs.camera.naming import day_obs
from cscs.core.topics import Kind
from cscs.efd.records import EfdRecord, Measurement, flatten_fields
from cscs.efd.sqlite_store import SqliteStore
from cscs.efd.store import EfdStore
from cscs.header_service.configuration import HeaderServiceConfig
from cscs.header_service.csc import HeaderServiceCsc
from cscs.header_service.rebuild import EfdHeaders

COMCAM = 2
HOUR_START = 1_796_000_000.0  # TAI: a night's hour
EXPOSURE_START = HOUR_START + 1800.0
EXPOSURE_TIME = 30.0


def _record(csc: str, kind: Kind, name: str, seq: int, t: float, **data: Any) -> EfdRecord:
    index = 0 if csc == "Weather" else COMCAM
    return EfdRecord(Measurement(csc, kind, name), index, seq, t, t + 0.01, flatten_fields(data))


def night_hour(image: str, day: str) -> list[EfdRecord]:
    """The hour's records, as the EFD writer would have recorded them."""
    records = [
        _record("Telescope", Kind.TELEMETRY, "mount", i + 1, HOUR_START + i * 0.1,
                ra=150.0 + i * 1e-5, dec=-30.0, rotatorAngle=12.0, focusZ=0.1)
        for i in range(36_000)
    ]  # fmt: skip
    for i in range(3600):
        t = HOUR_START + i
        records.append(_record("Weather", Kind.TELEMETRY, "weather", i + 1, t, temperature=9.0,
                               pressure=744.0, humidity=30.0, windSpeed=5.0 + i % 7,
                               windDirection=200.0, seeing=0.7))  # fmt: skip
        records.append(_record("Telescope", Kind.TELEMETRY, "dome", i + 1, t, azimuth=100.0))
    sensors = [d.name for d in camera_for_index(COMCAM).detectors]
    start, end = EXPOSURE_START, EXPOSURE_START + EXPOSURE_TIME
    records += [
        _record("Telescope", Kind.EVENT, "target", 1, HOUR_START + 10, ra=150.0, dec=-30.0,
                rotatorFrame="sky", trackingSystem="RADEC", object="NGC3115", program="BLOCK-1"),
        _record("Telescope", Kind.EVENT, "filter", 1, HOUR_START + 10, band="r",
                filter="r_03", slot=1),
        _record("Camera", Kind.EVENT, "focalPlaneSummaryInfo", 1, HOUR_START + 1,
                ccdLocation=",".join(sensors), ccdManufacturer=",".join(["ITL"] * 9),
                ccdType=",".join(["3800C"] * 9),
                ccdLSSTName=",".join(f"ITL-3800C-{n:03d}" for n in range(9)),
                ccdManSerNum=",".join(str(n) for n in range(9))),
        _record("Camera", Kind.EVENT, "startIntegration", 1, start, imageName=image,
                imageIndex=1, imagesInSequence=1, imageSource="CC", imageController="O",
                imageDate=day, imageNumber=100, groupId="g", imageType="OBJECT",
                exposureTime=EXPOSURE_TIME, timestampAcquisitionStart=start, timeout=60.0,
                additionalKeys="reason", additionalValues="science"),
        _record("Camera", Kind.EVENT, "startReadout", 1, end, imageName=image,
                timestampStartOfReadout=end),
        _record("Camera", Kind.EVENT, "endReadout", 1, end + 2, imageName=image, imageIndex=1,
                imagesInSequence=1, requestedExposureTime=EXPOSURE_TIME,
                timestampEndOfReadout=end + 2, sensors=",".join(sensors)),
        _record("Camera", Kind.EVENT, "endOfImageTelemetry", 1, end + 2.1, imageName=image,
                timestampDateObs=start, timestampDateEnd=end, exposureTime=EXPOSURE_TIME,
                darkTime=EXPOSURE_TIME + 0.2, measuredShutterOpenTime=EXPOSURE_TIME),
    ]  # fmt: skip
    return records


class AnswersInHand:
    """``store``'s answers to the rebuild's queries, asked once and then given again
    without reading: what is left of a rebuild's time is the replay and the making."""

    def __init__(self, store: EfdStore) -> None:
        self.url = store.url
        self._store = store
        self._answers: dict[str, list[EfdRecord]] = {}

    def records(self, *args: Any, **kwargs: Any) -> list[EfdRecord]:
        key = repr((args, sorted(kwargs.items())))
        if key not in self._answers:
            self._answers[key] = self._store.records(*args, **kwargs)
        return self._answers[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def time_rebuilds(
    store: EfdStore | AnswersInHand, image: str, root: Path, runs: int
) -> list[float]:
    """Seconds per rebuild of ``image`` from ``store``, each into an empty directory."""
    init = yaml.safe_load((HeaderServiceCsc.default_config_dir / "_init.yaml").read_text())  # type: ignore[operator]
    camera = camera_for_index(COMCAM)
    rules = [r for r in HeaderServiceConfig.model_validate(init).keywords
             if r.applies_to(camera.instrument)]  # fmt: skip
    seconds = []
    for run in range(runs + 1):
        headers = EfdHeaders(store, camera, COMCAM, rules, root / f"run{run}",
                             generator="HeaderService:2", version="bench")  # fmt: skip
        begin = time.perf_counter()
        outcome = headers.rebuild(image)
        took = time.perf_counter() - begin
        if outcome.status != "rebuilt":
            raise SystemExit(f"{image}: {outcome.status}: {outcome.detail}")
        if run:  # the first is astropy's warm-up
            seconds.append(took)
    return seconds


def main(runs: int) -> None:
    day = day_obs(EXPOSURE_START)
    image = f"CC_O_{day}_000100"
    records = night_hour(image, day)
    with tempfile.TemporaryDirectory(prefix="cscs-efd-rebuild-") as directory:
        root = Path(directory)
        sqlite = SqliteStore(root / "efd.sqlite3")
        for i in range(0, len(records), 5000):
            sqlite.write(records[i : i + 5000])
        base = time_rebuilds(AnswersInHand(sqlite), image, root / "in-hand", runs)
        real = time_rebuilds(sqlite, image, root / "sqlite", runs)
        sqlite.close()

    def spread(values: list[float]) -> str:
        return (f"median {statistics.median(values) * 1000:.1f} ms "
                f"({min(values) * 1000:.1f}-{max(values) * 1000:.1f})")  # fmt: skip

    print(f"one ComCam header (9 detectors) from an hour of {len(records)} records, {runs} runs:")
    print(f"  the store's answers in hand (baseline): {spread(base)}")
    print(f"  SQLite EFD: {spread(real)}; "
          f"{statistics.median(real) / statistics.median(base):.2f} x the baseline")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    main(parser.parse_args().runs)
