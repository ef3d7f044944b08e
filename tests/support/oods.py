"""Small fakes of the repository and ConsDB for the OODS's offline tests, and an archive
with a catalog to give it: the OODS's own rules tested without the Butler."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astropy.io import fits

from cscs.catalog import ArchivedFile, Catalog, sqlite_url
from cscs.oods.ports import RegisteredPath, RegistryResult, StoreUnavailableError


def exposure_id_of(image: str) -> int:
    """The Butler's: day_obs * 100000 + seq_num (what the real repository computes)."""
    _, _, day, seq = image.split("_")
    return int(day) * 100_000 + int(seq)


@dataclass
class FakeRegistry:
    """Registers in a set; a file in ``refuse`` is refused with its reason; ``down``
    fails every call as a locked database would. Every call is recorded."""

    held: dict[Path, float] = field(default_factory=dict)  # path -> mtime registered
    refuse: dict[Path, str] = field(default_factory=dict)
    down: str = ""
    calls: list[list[Path]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, paths: Sequence[Path]) -> RegistryResult:
        with self.lock:
            if self.down:
                raise StoreUnavailableError(self.down)
            self.calls.append(list(paths))
            result = RegistryResult()
            for path in paths:
                if path in self.refuse:
                    result.refused.append((path, self.refuse[path]))
                    continue
                mtime = path.stat().st_mtime
                changed = self.held.get(path) != mtime
                self.held[path] = mtime
                sensor = "_".join(path.stem.split("_")[-2:])
                result.registered.append(RegisteredPath(path, sensor, changed))
                result.headers[path] = self.header(path)
            return result

    def registered(self, paths: Iterable[Path]) -> set[Path]:
        with self.lock:
            if self.down:
                raise StoreUnavailableError(self.down)
            return {p for p in paths if p in self.held}

    def exposure_id(self, image: str) -> int:
        return exposure_id_of(image)

    def header(self, path: Path) -> Mapping[str, Any]:
        return dict(fits.getheader(path, 0))

    def close(self) -> None:
        pass


@dataclass
class FakeConsDb:
    images: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)
    quicklook: dict[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    down: str = ""

    def record_image(self, instrument: str, headers: Mapping[str, Mapping[str, Any]]) -> list[str]:
        if self.down:
            raise StoreUnavailableError(self.down)
        for sensor, header in headers.items():
            self.images.setdefault(str(header["OBSID"]), {})[sensor] = dict(header)
        return []

    def record_quicklook(
        self, instrument: str, image: str, qc: Mapping[str, Mapping[str, Any]]
    ) -> list[str]:
        if self.down:
            raise StoreUnavailableError(self.down)
        self.quicklook[image] = dict(qc)
        return []

    def close(self) -> None:
        pass


def instrument_of(image: str) -> str:
    return {"AT": "LATISS", "CC": "LSSTComCam", "MC": "LSSTCam"}[image[:2]]


def archive_file(
    root: Path,
    image: str,
    sensor: str,
    *,
    tai: float = 1.8e9,
    header: Mapping[str, Any] | None = None,
) -> Path:
    """A small FITS file of ``image`` and ``sensor`` in the archive, catalogued."""
    day = image.split("_")[2]
    path = root / instrument_of(image) / day / image / f"{image}_{sensor}.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    hdu = fits.PrimaryHDU()
    hdu.header["OBSID"] = image
    hdu.header["DETNAME"] = sensor
    for key, value in (header or {}).items():
        hdu.header[key] = value
    hdu.writeto(path, overwrite=True)
    catalogue(root, image, sensor, str(path), tai=tai)
    return path


def catalogue(root: Path, image: str, sensor: str, path: str, *, tai: float = 1.8e9) -> None:
    root.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(sqlite_url(root / "catalog.sqlite"))
    try:
        catalog.record(ArchivedFile(
            image_name=image, sensor=sensor, instrument=instrument_of(image),
            day_obs=image.split("_")[2], path=path, byte_size=2880, checksum="0" * 8,
            checksum_algorithm="adler32", header_complete=True, missing_keywords="",
            daq_image="test", header_url="", header_md5="", software_version="test",
            exposure_start_tai=tai, archived_tai=tai + 10,
        ))  # fmt: skip
    finally:
        catalog.close()
