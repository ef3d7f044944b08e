"""The archive on disk and its catalog: where each file goes, how it is written, what is
recorded about it.

Layout (ICD §6): ``{root}/{instrument}/{dayObs}/{image}/{image}_{RXX}_{SXX}.fits``, every
path built with :func:`~cscs.camera.files.path_under`, so it stays under the root. A
file is written whole and synced under a temporary name (:mod:`cscs.camera.fits`, here
or on a Dask worker), recorded in the catalog in one transaction with the other files
finished at the same time (:mod:`~cscs.archiver.commits`), and only then renamed; at
open, a temporary the catalog has committed is renamed, any other removed
(:mod:`~cscs.archiver.recovery`). So, once open, the catalog lists only files whole
under their names, and every file under its name is in the catalog (ADR 0040).
Before each write the free space is checked against ``min_free_bytes``: a full archive
is refused with the figures, not discovered half-way through a file. With tile
compression, files are compressed in worker processes (:mod:`cscs.camera.compressing`),
one per core, owned by the store and stopped with it.

Every method blocks (disk, database): the archiver calls them in worker threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cscs.archiver.commits import GroupCommit
from cscs.archiver.headers import Header
from cscs.archiver.recovery import recover
from cscs.archiver.writer import (
    ArchiveFiles,
    ArchiveUnwritableError,
    check_image,
    check_names,
    remove_partials_of,
)
from cscs.camera.checksum import Algorithm, check_algorithm
from cscs.camera.compressing import CompressionWorkers
from cscs.camera.files import final_name, publish
from cscs.camera.fits import WrittenFile, write_raw_fits
from cscs.camera.geometry import SEGMENTS, Camera
from cscs.camera.naming import ImageName
from cscs.camera.verify import verify_raw_file
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
        self.files = ArchiveFiles(
            root, camera, compression=compression, checksum=checksum,
            min_free_bytes=min_free_bytes,
        )  # fmt: skip
        self._workers = CompressionWorkers() if compression else None
        self._writes = 0  # writes and records under way, in worker threads
        self._no_writes = threading.Condition()
        self.commits = GroupCommit(catalog.record_all)
        self.named_at_open = 0  # temporaries a crash left after their commit, renamed

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
        """Open (creating) the archive at ``root``, settling what a crash left
        (:func:`~cscs.archiver.recovery.recover`: temporaries committed are renamed,
        counted in ``named_at_open``); also how many temporaries were removed. OSError
        or CatalogError naming the cause."""
        root = root.resolve()  # every path recorded and announced is absolute
        root.mkdir(parents=True, exist_ok=True)
        # A store replaced by this one may still have threads writing (their jobs were
        # cancelled, the threads were not): their temporaries are not a crash's.
        if not _UNDER_WAY.wait_idle(_IDLE_WAIT):
            raise OSError(
                f"files of the archive's previous configuration are still being written "
                f"after {_IDLE_WAIT:.0f} s: {root} not opened (try again)"
            )
        catalog = Catalog(catalog_url or sqlite_url(root / "catalog.sqlite"))
        try:
            recovered = recover(root, catalog)
        except BaseException:
            catalog.close()
            raise
        store = cls(root, catalog, camera, compression=compression, checksum=checksum,
                    min_free_bytes=min_free_bytes)  # fmt: skip
        store.named_at_open = recovered.named
        return store, recovered.removed

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
        """Where the file of ``image``'s ``sensor`` goes (:meth:`ArchiveFiles.path`)."""
        return self.files.path(image, sensor)

    def free_bytes(self) -> int:
        return self.files.free_bytes()

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
        with self._under_way():
            write = self._workers.write if self._workers is not None else write_raw_fits
            written = self.files.write(pixels, header, write, publish=False)
            return self.record(pixels.image, pixels.sensor, written, header, provenance)

    @contextlib.contextmanager
    def _under_way(self) -> Iterator[None]:
        """Counted while a file is written or recorded: :meth:`close` waits for this
        store's, and :meth:`open` for every store's of this process."""
        with self._no_writes:
            self._writes += 1
        try:
            with _UNDER_WAY.one():
                yield
        finally:
            with self._no_writes:
                self._writes -= 1
                self._no_writes.notify_all()

    def record(
        self,
        image: str,
        sensor: str,
        written: WrittenFile,
        header: Header | None,
        provenance: Provenance,
    ) -> ArchivedFile:
        """Catalogue a file written whole (here or by a worker elsewhere), replacing an
        earlier row of the same ``(image, sensor)``, then give it its name if it is
        still under its temporary one (``written.temporary``): the row is committed
        first, so a crash between the two is rolled forward at the next open.
        CatalogError if the catalog fails (the temporary is left for the next open to
        judge: a commit whose answer was lost may have been made);
        ArchiveUnwritableError if the rename fails (the same)."""
        with self._under_way():
            start = header.exposure_start() if header else None
            row = ArchivedFile(
                image_name=image, sensor=sensor, instrument=self.camera.instrument,
                day_obs=ImageName.parse(image).day_obs, path=str(written.path),
                byte_size=written.byte_size, checksum=written.checksum,
                checksum_algorithm=written.checksum_algorithm,
                header_complete=header is not None and not header.missing,
                missing_keywords=header.missing if header else "header not received",
                daq_image=f"{provenance.daq} {image}", header_url=header.url if header else "",
                header_md5=header.md5 if header else "",
                software_version=provenance.software_version,
                exposure_start_tai=start if start is not None else current_tai(),
                archived_tai=current_tai(), header_source=header.source if header else "",
            )  # fmt: skip
            if written.temporary is not None:
                self._check_temporary(image, sensor, written)
            self.commits.record([row], [observation_of(image, header)] if header else [])
            if written.temporary is not None:
                try:
                    publish(written.temporary, written.path)
                except OSError as exc:
                    raise ArchiveUnwritableError(
                        f"cannot name {written.path} (recorded; the next start names it): {exc}"
                    ) from exc
                # What earlier attempts left (a Dask worker killed mid-write), once whole.
                remove_partials_of(written.path)
            return row

    def _check_temporary(self, image: str, sensor: str, written: WrittenFile) -> None:
        """A temporary must be the one made for the file's own path (a worker's answer
        is checked before the catalog is told): ArchiveUnwritableError otherwise."""
        path = self.path(image, sensor)
        if written.temporary is None or final_name(written.temporary) != path:
            raise ArchiveUnwritableError(
                f"{written.temporary} is not a temporary of {path}: not recorded"
            )

    def read_back(self, row: ArchivedFile) -> SensorPixels:
        """The pixels of a file archived here (to rewrite it with its header)."""
        from astropy.io import fits

        # Vouched for by the file itself: its size and checksum as catalogued, and its
        # FITS checksums; OSError naming what is wrong otherwise (it is not rewritten).
        algorithm = check_algorithm(row.checksum_algorithm)
        problems = verify_raw_file(Path(row.path), row.byte_size, row.checksum, algorithm)
        if problems:
            raise OSError(f"not rewritten: {'; '.join(problems)}")
        with fits.open(row.path) as hdus:
            segments = tuple(hdus[s.name].data.astype("=i4") for s in SEGMENTS)
        return SensorPixels.trusted(row.image_name, row.sensor, segments)


class _Counter:
    """Files written or recorded in this process, by any store."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        with self._changed:
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout=timeout)


_UNDER_WAY = _Counter()
_IDLE_WAIT = 60.0  # s: as long as closing a store waits for its writes


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
