"""Archived raw files made by the project's own code, small: the header service renders
the header document, the archiver's :class:`ArchiveFiles` writes the file where the
archive puts it, with the primary header the archiver writes; only the pixels are
tiny (4 x 4 per amplifier), since the repository reads headers, not pixels.
Test-only: it reaches into the archiver's and the header service's modules."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from cscs.archiver.headers import Header, header_of
from cscs.archiver.writer import ArchiveFiles
from cscs.camera.events import EndOfImageTelemetry, StartIntegration
from cscs.camera.geometry import SEGMENTS, Camera
from cscs.camera.headers.yaml_codec import parse_header_document
from cscs.camera.naming import ImageName
from cscs.daq.reader import SensorPixels
from tests.support.headers import rendered_header

__all__ = ["archive_image", "header_document", "start_tai"]

_DAY_START_TAI = 1_795_219_200.0  # 2026-11-21T00:00:00 TAI as Unix seconds (UTC-aligned)


def start_tai(image: str) -> float:
    """A start time in the night of ``image``'s day (after 20:00 TAI), one minute per
    sequence number."""
    name = ImageName.parse(image)
    day = datetime.date(int(name.day_obs[:4]), int(name.day_obs[4:6]), int(name.day_obs[6:]))
    days = (day - datetime.date(2026, 11, 21)).days
    return _DAY_START_TAI + days * 86400.0 + 20 * 3600.0 + 60.0 * name.seq_num


def archive_image(
    root: Path,
    camera: Camera,
    image: str,
    sensors: list[str] | None = None,
    *,
    header: bool = True,
    image_type: str = "OBJECT",
    exposure_time: float = 30.0,
    group: str = "",
    physical_filter: str = "SDSSr_65mm",
    band: str = "r",
    pixels: int = 0,
) -> list[Path]:
    """Archive ``image``'s files under ``root`` (all of the camera's detectors unless
    ``sensors``): with a complete header, or (``header=False``) as the archiver writes
    a file whose header has not come. ``pixels``: the first amplifier's value (each
    next one more)."""
    sensors = sensors or [d.name for d in camera.detectors]
    document = None
    if header:
        document = header_document(camera, image, sensors, image_type=image_type,
                                   exposure_time=exposure_time, group=group,
                                   physical_filter=physical_filter, band=band)  # fmt: skip
    files = ArchiveFiles(root, camera)
    written = []
    for sensor in sensors:
        segments = tuple(np.full((4, 4), pixels + i, np.int32) for i in range(len(SEGMENTS)))
        data = SensorPixels.trusted(image, sensor, segments)
        written.append(files.write(data, document).path)
    return written


def header_document(
    camera: Camera,
    image: str,
    sensors: list[str],
    *,
    image_type: str = "OBJECT",
    exposure_time: float = 30.0,
    group: str = "",
    physical_filter: str = "SDSSr_65mm",
    band: str = "r",
) -> Header:
    """The header document the archiver would hold for ``image``: rendered by the
    header service's code, parsed as the archiver parses it, a filter and a target
    added."""
    name = ImageName.parse(image)
    begin = start_tai(image)
    start = StartIntegration(
        imageName=image, imageIndex=1, imagesInSequence=1, imageSource=name.code,
        imageController=name.controller, imageDate=name.day_obs, imageNumber=name.seq_num,
        groupId=group or f"{image}-group", imageType=image_type, exposureTime=exposure_time,
        timestampAcquisitionStart=begin, timeout=30.0, additionalKeys="", additionalValues="",
    )  # fmt: skip
    end = EndOfImageTelemetry(
        imageName=image, timestampDateObs=begin, timestampDateEnd=begin + exposure_time,
        exposureTime=exposure_time, darkTime=exposure_time + 0.5,
        measuredShutterOpenTime=exposure_time,
    )  # fmt: skip
    rendered = rendered_header(camera, start, end, sensors)
    document = header_of("file:///h.yaml", rendered.md5, parse_header_document(rendered.data))
    document.primary.extend([("FILTER", physical_filter, ""), ("FILTBAND", band, ""),
                             ("OBJECT", "field", ""), ("PROGRAM", "test", "")])  # fmt: skip
    if camera is Camera.LATISS:  # no grating in the beam: the filter is "SDSSr_65mm~empty"
        document.primary.append(("GRATING", "empty_1", ""))
    return document
