"""The archive on disk and its catalog: where each file goes, how it is written, what is
recorded about it.

Layout (ICD §6): ``{root}/{instrument}/{dayObs}/{image}/{image}_{RXX}_{SXX}.fits``, every
path built with :func:`~cscs.camera.files.path_under`, so it stays under the root. A
file is written whole under a temporary name and renamed (:mod:`cscs.camera.fits`), and
only then recorded in the catalog, so the catalog never lists a file that is not whole.
Before each write the free space is checked against ``min_free_bytes``: a full archive
is refused with the figures, not discovered half-way through a file. With tile
compression, files are compressed in worker processes (:mod:`cscs.camera.compressing`),
one per core, owned by the store and stopped with it.

Every method blocks (disk, database): the archiver calls them in worker threads.
"""

from __future__ import annotations

import errno
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from cscs.archiver.headers import Header
from cscs.camera.checksum import Algorithm
from cscs.camera.compressing import CompressionWorkers
from cscs.camera.files import path_under
from cscs.camera.fits import BLOCK, Card, write_raw_fits
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
from cscs.camera.observatory import astropy_time
from cscs.catalog import ArchivedFile, Catalog, Observation, sqlite_url
from cscs.core.tai import current_tai
from cscs.daq.reader import SensorPixels

__all__ = [
    "ArchiveStore",
    "ArchiveUnwritableError",
    "Provenance",
    "check_image",
    "check_names",
    "observation_of",
]

# The most one file can take: the segments, their padding, and generous headers.
_FILE_BYTES = len(SEGMENTS) * (SEGMENT_BYTES + 4 * BLOCK) + 20 * BLOCK


class ArchiveUnwritableError(Exception):
    """The archive cannot take the file: no space, or the file system refused."""


@dataclass(frozen=True)
class Provenance:
    """Where a file's pixels came from and what wrote it (recorded in the catalog)."""

    daq: str  # the DAQ endpoint
    software_version: str


class ArchiveStore:
    """One camera's archive: a directory tree of raw files and the catalog of them."""

    def __init__(
        self,
        root: Path,
        catalog: Catalog,
        camera: Camera,
        *,
        compression: str = "",
        checksum: Algorithm = "adler32",
        min_free_bytes: int = 0,
    ) -> None:
        self.root = root
        self.catalog = catalog
        self.camera = camera
        self.compression = compression
        self.checksum = checksum
        self.min_free_bytes = min_free_bytes
        self._workers = CompressionWorkers() if compression else None
        self._writes = 0  # under way, in worker threads
        self._no_writes = threading.Condition()

    @classmethod
    def open(
        cls,
        root: Path,
        camera: Camera,
        *,
        catalog_url: str = "",
        compression: str = "",
        checksum: Algorithm = "adler32",
        min_free_bytes: int = 0,
    ) -> tuple[ArchiveStore, int]:
        """Open (creating) the archive at ``root``; also how many temporaries a crash
        left behind were removed. OSError or CatalogError naming the cause."""
        root = root.resolve()  # every path recorded and announced is absolute
        root.mkdir(parents=True, exist_ok=True)
        stale = remove_partial_files(root)
        catalog = Catalog(catalog_url or sqlite_url(root / "catalog.sqlite"))
        store = cls(root, catalog, camera, compression=compression, checksum=checksum,
                    min_free_bytes=min_free_bytes)  # fmt: skip
        return store, stale

    def close(self, wait: float = 60.0) -> None:
        """Close once the files under way are written and recorded (up to ``wait``
        seconds: a write the archiver's job gave up on still ends with its catalog row,
        or catch-up would find a file the catalog does not list)."""
        with self._no_writes:
            self._no_writes.wait_for(lambda: self._writes == 0, timeout=wait)
        if self._workers is not None:
            self._workers.close()
        self.catalog.close()

    # ---- where and what ------------------------------------------------------------

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

    def is_archived(self, image: str, sensor: str) -> bool:
        return self.catalog.lookup(image, sensor) is not None

    def archived_sensors(self, images: list[str]) -> dict[str, set[str]]:
        """For each image, the sensors the catalog has."""
        return {image: {row.sensor for row in self.catalog.files_of(image)} for image in images}

    def files_of(self, image: str) -> list[ArchivedFile]:
        return self.catalog.files_of(image)

    def without_header(self) -> list[ArchivedFile]:
        return self.catalog.without_header()

    # ---- writing ---------------------------------------------------------------------

    def write(
        self, pixels: SensorPixels, header: Header | None, provenance: Provenance
    ) -> ArchivedFile:
        """Write one detector's file, whole, and record it (replacing an earlier row: a
        file completed with its header later). ArchiveUnwritableError if the archive
        cannot take it; CatalogError if the catalog fails."""
        with self._no_writes:
            self._writes += 1
        try:
            return self._write(pixels, header, provenance)
        finally:
            with self._no_writes:
                self._writes -= 1
                self._no_writes.notify_all()

    def _write(
        self, pixels: SensorPixels, header: Header | None, provenance: Provenance
    ) -> ArchivedFile:
        image, sensor = pixels.image, pixels.sensor
        path = self.path(image, sensor)
        free = self.free_bytes()
        if free - _FILE_BYTES < self.min_free_bytes:
            raise ArchiveUnwritableError(
                f"archive {self.root} is full: {free / 1e9:.2f} GB free, min_free_bytes is "
                f"{self.min_free_bytes / 1e9:.2f} GB; {image} {sensor} not written"
            )
        detector = self.camera.detector(sensor)
        extensions = [_extension_cards(detector, s, header) for s in SEGMENTS]
        try:
            write = self._workers.write if self._workers is not None else write_raw_fits
            written = write(
                path,
                _file_cards(path) + self._primary_cards(image, sensor, header),
                list(zip(extensions, pixels.segments, strict=True)),
                compression=self.compression,
                checksum=self.checksum,
            )
        except OSError as exc:
            why = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
            raise ArchiveUnwritableError(
                f"cannot write {path}: {why} (no partial file left)"
            ) from exc
        start = header.exposure_start() if header else None
        row = ArchivedFile(
            image_name=image, sensor=sensor, instrument=self.camera.instrument,
            day_obs=ImageName.parse(image).day_obs, path=str(path),
            byte_size=written.byte_size, checksum=written.checksum,
            checksum_algorithm=written.checksum_algorithm,
            header_complete=header is not None and not header.missing,
            missing_keywords=header.missing if header else "header not received",
            daq_image=f"{provenance.daq} {image}", header_url=header.url if header else "",
            header_md5=header.md5 if header else "",
            software_version=provenance.software_version,
            exposure_start_tai=start if start is not None else current_tai(),
            archived_tai=current_tai(),
        )  # fmt: skip
        self.catalog.record(row)
        if header is not None:
            self.catalog.record_observation(observation_of(image, header))
        return row

    def _primary_cards(self, image: str, sensor: str, header: Header | None) -> list[Card]:
        if header is None:
            detector = self.camera.detector(sensor)
            return [
                ("OBSID", image, "image name"),
                ("INSTRUME", self.camera.instrument, "instrument"),
                *[(k, v, "") for k, v in detector_keywords(detector).items()],
                ("HDRSTAT", "MISSING", "header service document not received"),
            ]
        return header.primary + header.detectors.get(sensor, [])

    def read_back(self, row: ArchivedFile) -> SensorPixels:
        """The pixels of a file archived here (to rewrite it with its header)."""
        from astropy.io import fits

        with fits.open(row.path, checksum=True) as hdus:
            segments = tuple(hdus[s.name].data.astype("=i4") for s in SEGMENTS)
        return SensorPixels(row.image_name, row.sensor, segments, ())


def observation_of(image: str, header: Header) -> Observation:
    """What a data query selects on, from the header's primary cards ("" where the
    header service could not collect a value: the image is then not selected by it)."""
    values = {keyword: value for keyword, value, _ in header.primary}

    def text(keyword: str) -> str:
        value = values.get(keyword)
        return value if isinstance(value, str) else ""

    exposure = values.get("EXPTIME")
    return Observation(
        image_name=image,
        image_type=text("IMGTYPE")[:16],
        group_id=text("GROUPID")[:64],
        filter=text("FILTER")[:64],
        band=text("FILTBAND")[:16],
        exposure_time=float(exposure) if isinstance(exposure, int | float) else -1.0,
    )


def _file_cards(path: Path) -> list[Card]:
    """What only the writer knows: the file's name and when it was made (``DATE`` and
    ``MJD``, TAI as every time in these headers: ``TIMESYS = 'TAI'``)."""
    now = astropy_time(current_tai())
    return [
        ("FILENAME", path.name, "original file name"),
        ("DATE", str(now.isot), "file creation time (TAI)"),
        ("MJD", float(now.mjd), "file creation time (TAI), MJD"),
    ]


def _extension_cards(detector: Detector, segment: Segment, header: Header | None) -> list[Card]:
    """An amplifier extension's keywords: the geometry's, always (a header document
    cannot move pixels), then whatever else the document gives for the segment."""
    geometry = segment_keywords(detector, segment)
    extra = header.segments.get(segment.name, []) if header else []
    return [(k, v, "") for k, v in geometry.items()] + [c for c in extra if c[0] not in geometry]


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


def remove_partial_files(root: Path) -> int:
    """Delete temporaries a crash left behind (never under a final name); how many."""
    count = 0
    for path in root.rglob(".*.partial"):
        path.unlink(missing_ok=True)
        count += 1
    return count
