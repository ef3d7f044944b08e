"""An archive of simulated raws written straight to disk, without a night: for tests and
benchmarks of what reads the archive (OCS Batch), where taking the images through the
camera, the DAQ and the archiver would only cost time.

Files are made by the camera simulator's pixel code and written and recorded by the
archiver's own store, so they are what a night would have archived, with the header
values a data query selects on (image type, group, filter, exposure time) and those
``image-qc`` measures with (each detector's celestial WCS, the band, the airmass). Each
image's header goes the way a header service's does: a header document of the shared
format (:mod:`cscs.camera.headers`) written under ``{root}/headers``, read back and
checked by the archiver's own reader. The sky's catalog for the fields is written as the
reference catalog, if asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cscs.archiver.headers import Header, fetch_header
from cscs.archiver.store import ArchiveStore, Provenance
from cscs.camera.geometry import Camera, detector_keywords
from cscs.camera.headers.document import HeaderCard, HeaderDocument
from cscs.camera.headers.reading import HeaderTrust
from cscs.camera.headers.yaml_codec import dump_header_document
from cscs.camera.naming import ImageName
from cscs.camera.sky import Pointing, detector_wcs
from cscs.catalog import ArchivedFile
from cscs.daq.reader import SensorPixels
from sim.daq.pixels import DEFAULT_POINTING, ElectronicsModel, Scene, SkyModel, synthesize_sensor
from sim.daq.reference import field_radius, write_field_shards

__all__ = ["SimulatedExposure", "simulated_archive"]

DAY_OBS = "20261121"


@dataclass(frozen=True)
class SimulatedExposure:
    image_type: str  # BIAS, DARK, FLAT, OBJECT
    exposure_time: float = 0.0
    seeing: float = 0.8  # arcsec
    group: str = "group-1"
    band: str = "r"
    pointing: Pointing = DEFAULT_POINTING
    airmass: float = 1.0


def simulated_archive(
    root: Path,
    camera: Camera,
    exposures: list[SimulatedExposure],
    sensors: list[str],
    *,
    first_number: int = 1,
    electronics: ElectronicsModel | None = None,
    reference_catalog: Path | None = None,
) -> list[ArchivedFile]:
    """Write one file per exposure and sensor into the archive at ``root`` (catalog at
    ``{root}/catalog.sqlite``) and return their catalog rows, in order; with
    ``reference_catalog``, the sky's catalog of every field there."""
    model = electronics or ElectronicsModel()
    store, _ = ArchiveStore.open(root, camera, min_free_bytes=0)
    rows: list[ArchivedFile] = []
    try:
        for number, exposure in enumerate(exposures, start=first_number):
            image = str(ImageName(camera.code, "O", DAY_OBS, number))
            scene = Scene(
                image_type=exposure.image_type, exposure_time=exposure.exposure_time,
                dark_time=exposure.exposure_time, seed=number, camera=camera,
                sky=SkyModel(seeing_fwhm=exposure.seeing), pointing=exposure.pointing,
                band=exposure.band, airmass=exposure.airmass,
            )  # fmt: skip
            if reference_catalog is not None:
                sky, at = scene.sky, exposure.pointing
                radius = field_radius(camera)
                write_field_shards(
                    reference_catalog, at.ra, at.dec, radius, sky.star_counts, sky.catalog_seed
                )
            header = _header(root / "headers", image, exposure, camera, sensors)
            for sensor in sensors:
                segments = synthesize_sensor(model, scene, camera.detector(sensor))
                pixels = SensorPixels.trusted(image, sensor, segments)
                rows.append(store.write(pixels, header, Provenance("simulated", "test")))
    finally:
        store.close()
    return rows


def _header(
    directory: Path, image: str, exposure: SimulatedExposure, camera: Camera, sensors: list[str]
) -> Header:
    """The image's header document, written to ``directory`` as a header service would
    and read back as the archiver does."""
    # What identifies the file to whatever reads its header (the repository: which
    # camera, image and detector), then what the simulated exposure was.
    primary: list[tuple[str, str | float]] = [
        ("INSTRUME", camera.header_instrument), ("OBSID", image),
        ("IMGTYPE", exposure.image_type), ("EXPTIME", exposure.exposure_time),
        ("DARKTIME", exposure.exposure_time), ("GROUPID", exposure.group),
        ("FILTER", f"{exposure.band}_03"), ("FILTBAND", exposure.band),
        ("AIRMASS", exposure.airmass),
    ]  # fmt: skip
    detectors = {
        sensor: detector_keywords(camera.detector(sensor))
        | detector_wcs(camera, camera.detector(sensor), exposure.pointing).keywords()
        for sensor in sensors
    }
    document = HeaderDocument(
        imageName=image, generator="simulated", version="test",
        primary=[HeaderCard(keyword=k, value=v) for k, v in primary],
        detectors={
            sensor: [HeaderCard(keyword=k, value=v) for k, v in keywords.items()]
            for sensor, keywords in detectors.items()
        },
        segments={}, missing=[],
    )  # fmt: skip
    path = directory / DAY_OBS / f"{image}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dump_header_document(document))
    return fetch_header(path.as_uri(), image, None, HeaderTrust((directory,)))
