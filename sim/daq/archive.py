"""An archive of simulated raws written straight to disk, without a night: for tests and
benchmarks of what reads the archive (OCS Batch), where taking the images through the
camera, the DAQ and the archiver would only cost time.

Files are made by the camera simulator's pixel code and written and recorded by the
archiver's own store, so they are what a night would have archived, with the header
values a data query selects on (image type, group, filter, exposure time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cscs.archiver.headers import Header
from cscs.archiver.store import ArchiveStore, Provenance
from cscs.camera.geometry import Camera
from cscs.camera.naming import ImageName
from cscs.catalog import ArchivedFile
from cscs.daq.reader import SensorPixels
from sim.daq.pixels import ElectronicsModel, Scene, SkyModel, synthesize_sensor

__all__ = ["SimulatedExposure", "simulated_archive"]

DAY_OBS = "20261121"


@dataclass(frozen=True)
class SimulatedExposure:
    image_type: str  # BIAS, DARK, FLAT, OBJECT
    exposure_time: float = 0.0
    seeing: float = 0.8  # arcsec
    group: str = "group-1"
    band: str = "r"


def simulated_archive(
    root: Path,
    camera: Camera,
    exposures: list[SimulatedExposure],
    sensors: list[str],
    *,
    first_number: int = 1,
    electronics: ElectronicsModel | None = None,
) -> list[ArchivedFile]:
    """Write one file per exposure and sensor into the archive at ``root`` (catalog at
    ``{root}/catalog.sqlite``) and return their catalog rows, in order."""
    model = electronics or ElectronicsModel()
    store, _ = ArchiveStore.open(root, camera, min_free_bytes=0)
    rows: list[ArchivedFile] = []
    try:
        for number, exposure in enumerate(exposures, start=first_number):
            image = str(ImageName(camera.code, "O", DAY_OBS, number))
            scene = Scene(
                image_type=exposure.image_type, exposure_time=exposure.exposure_time,
                dark_time=exposure.exposure_time, seed=number, camera=camera,
                sky=SkyModel(seeing_fwhm=exposure.seeing),
            )  # fmt: skip
            header = Header(
                url="", md5="", detectors={}, segments={}, missing="",
                primary=[
                    ("IMGTYPE", exposure.image_type, ""), ("EXPTIME", exposure.exposure_time, ""),
                    ("DARKTIME", exposure.exposure_time, ""), ("GROUPID", exposure.group, ""),
                    ("FILTER", f"{exposure.band}_03", ""), ("FILTBAND", exposure.band, ""),
                ],
            )  # fmt: skip
            for sensor in sensors:
                segments = synthesize_sensor(model, scene, camera.detector(sensor))
                pixels = SensorPixels(image, sensor, tuple(segments), ())
                rows.append(store.write(pixels, header, Provenance("simulated", "test")))
    finally:
        store.close()
    return rows
