"""One detector's raw file, written into the archive: where it goes, what its headers
say, and the write itself (whole and synced under a temporary name; renamed by the
archive store once its catalog row is committed), without the catalog.

The archiver's own process writes with it (``executor: local``, through
:class:`~cscs.archiver.store.ArchiveStore`), and so does a Dask worker on another host
(``executor`` a scheduler: :mod:`cscs.archiver.worker`): both make the same file from
the same pixels and header, and the catalog row is made afterwards by the archiver
alone. Blocking: call it in a worker thread.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cscs.archiver.headers import Header
from cscs.camera.checksum import Algorithm
from cscs.camera.datasums import DataSumMismatchError
from cscs.camera.files import final_name, path_under
from cscs.camera.fits import BLOCK, Card, WrittenFile, write_raw_fits
from cscs.camera.fits_header import KeyedCards
from cscs.camera.focal_plane import segment_keywords
from cscs.camera.geometry import (
    SEGMENT_BYTES,
    SEGMENTS,
    Camera,
    Detector,
    Segment,
    detector_keywords,
)
from cscs.camera.naming import ImageName
from cscs.core.tai import current_tai, tai_isot, tai_mjd
from cscs.daq.reader import SensorPixels

__all__ = [
    "ArchiveFiles",
    "ArchiveUnwritableError",
    "FileWrite",
    "check_image",
    "check_names",
    "remove_partials_of",
]

# The most one file can take: the segments, their padding, and generous headers.
FILE_BYTES = len(SEGMENTS) * (SEGMENT_BYTES + 4 * BLOCK) + 20 * BLOCK

#: How the bytes reach the disk: :func:`~cscs.camera.fits.write_raw_fits`'s signature
#: (compression workers stand in for it where there are some).
FileWrite = Callable[..., WrittenFile]


class ArchiveUnwritableError(Exception):
    """The archive cannot take the file: no space, or the file system refused."""


class ArchiveFiles:
    """The files of one camera's archive under ``root`` (a directory every writer sees)."""

    def __init__(
        self,
        root: Path,
        camera: Camera,
        *,
        compression: str = "",
        checksum: Algorithm = "adler32",
        min_free_bytes: int = 0,
    ) -> None:
        self.root = root
        self.camera = camera
        self.compression = compression
        self.checksum = checksum
        self.min_free_bytes = min_free_bytes

    def path(self, image: str, sensor: str) -> Path:
        """Where the file of ``image``'s ``sensor`` goes; ValueError for a name that is
        not an image of this camera's, and (a second line of defence, should a check
        ever let one through) PathEscapeError for a path that would leave the archive
        root: no name from the bus can lead elsewhere. Blocking (resolves symlinks)."""
        day_obs = check_names(self.camera, image, sensor)
        detector = self.camera.detector(sensor)
        name = f"{image}_{detector.raft}_{detector.slot}.fits"
        return path_under(self.root, self.camera.instrument, day_obs, image, name)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def write(
        self,
        pixels: SensorPixels,
        header: Header | None,
        write: FileWrite = write_raw_fits,
        *,
        publish: bool = True,
    ) -> WrittenFile:
        """The detector's file, whole under its final name (or, without ``publish``,
        whole and synced under the temporary name ``WrittenFile.temporary``, for the
        archive store to name once the catalog has it); ArchiveUnwritableError naming
        the cause when the archive cannot take it (nothing partial is left), and the
        DAQ's ChecksumMismatchError, before anything is written, when a segment does not
        sum to the ``DATASUM`` the DAQ sent with it (ADR 0041)."""
        image, sensor = pixels.image, pixels.sensor
        path = self.path(image, sensor)
        free = self.free_bytes()
        if free - FILE_BYTES < self.min_free_bytes:
            raise ArchiveUnwritableError(
                f"archive {self.root} is full: {free / 1e9:.2f} GB free, min_free_bytes is "
                f"{self.min_free_bytes / 1e9:.2f} GB; {image} {sensor} not written"
            )
        detector = self.camera.detector(sensor)
        extensions = [_extension_cards(detector, s, header) for s in SEGMENTS]
        segments: list[npt.NDArray[np.int32]] = list(pixels.segments)
        try:
            return write(
                path,
                _file_cards(path) + self.primary_cards(image, sensor, header),
                list(zip(extensions, segments, strict=True)),
                datasums=pixels.datasums,
                compression=self.compression,
                checksum=self.checksum,
                publish=publish,
            )
        except DataSumMismatchError as exc:
            raise pixels.mismatch(exc) from None
        except OSError as exc:
            why = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
            raise ArchiveUnwritableError(
                f"cannot write {path}: {why} (no partial file left)"
            ) from exc

    def primary_cards(self, image: str, sensor: str, header: Header | None) -> list[Card]:
        if header is None:
            detector = self.camera.detector(sensor)
            return [
                ("OBSID", image, "image name"),
                ("INSTRUME", self.camera.instrument, "instrument"),
                *[(k, v, "") for k, v in detector_keywords(detector).items()],
                ("HDRSTAT", "MISSING", "header service document not received"),
            ]
        cards = header.primary + header.detectors.get(sensor, [])
        return cards + header.notes(cards)


def _file_cards(path: Path) -> list[Card]:
    """What only the writer knows: the file's name and when it was made (``DATE`` and
    ``MJD``, TAI as every time in these headers: ``TIMESYS = 'TAI'``)."""
    tai = current_tai()
    return [
        ("FILENAME", path.name, "original file name"),
        ("DATE", tai_isot(tai), "file creation time (TAI)"),
        ("MJD", tai_mjd(tai), "file creation time (TAI), MJD"),
    ]


def _extension_cards(detector: Detector, segment: Segment, header: Header | None) -> KeyedCards:
    """An amplifier extension's keywords: the geometry's, always (a header document
    cannot move pixels), then whatever else the document gives for the segment."""
    geometry, keywords = _geometry_cards(detector, segment)
    extra = header.segments.get(segment.name, []) if header else []
    if not extra:
        return geometry
    return geometry + KeyedCards(c for c in extra if c[0] not in keywords)


@functools.lru_cache(maxsize=4096)  # LSSTCam: 205 detectors x 16 segments
def _geometry_cards(detector: Detector, segment: Segment) -> tuple[KeyedCards, frozenset[str]]:
    """The geometry's cards, computed once per amplifier (~1 ms of coordinate
    transforms each, 16 per file), and their keywords."""
    geometry = segment_keywords(detector, segment)
    return KeyedCards((k, v, "") for k, v in geometry.items()), frozenset(geometry)


def check_image(camera: Camera, image: str) -> str:
    """The image's day of observation, if ``image`` is a name of ``camera``'s (ICD §5);
    otherwise ValueError saying why not."""
    name = ImageName.parse(image)
    if name.code != camera.code:
        raise ValueError(f"{image} is not a {camera.instrument} image ({camera.code}_…)")
    return name.day_obs


def check_names(camera: Camera, image: str, sensor: str) -> str:
    """:func:`check_image`, and ``sensor`` one of the camera's detectors."""
    day_obs = check_image(camera, image)
    camera.detector(sensor)
    return day_obs


def remove_partials_of(path: Path) -> int:
    """Delete what earlier attempts at ``path`` left (a worker killed mid-write), once
    the file is whole under its name; how many. (One listing of the directory, names
    compared as text: a glob's pattern, compiled anew for each file, cost more than the
    rest of a file's bookkeeping.)"""
    prefix, count = f".{path.name}.", 0
    with os.scandir(path.parent) as entries:
        for entry in entries:
            name = entry.name
            ours = name.startswith(prefix) and name.endswith(".partial")
            if ours and final_name(path.parent / name) == path:
                Path(entry.path).unlink(missing_ok=True)
                count += 1
    return count
