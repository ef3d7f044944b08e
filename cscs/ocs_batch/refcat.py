"""The reference catalog ``image-qc`` measures zero points against: a directory of FITS
binary tables (shards), each of stars with ``ra``, ``dec`` (degrees, ICRS) and one
magnitude column per band, ``{band}_mag`` (AB). Any number of shards, in any split of
the sky, as long as no star is in two (``docs/ocs-batch.md`` gives the format).

Read once per worker process and kept while the directory's listing (names, sizes,
modification times) is unchanged; a task asks for the stars in a cone and gets them
from a slice of the catalog sorted by declination. What a shard holds is checked where
it is read: rows that are not on the sky are dropped, a table without ``ra``/``dec`` is
refused by name, and the whole is bounded (:data:`MAX_SHARDS`, :data:`MAX_STARS`).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cscs.camera.fits import write_with_fitsio
from cscs.camera.geometry import CCD_COLS, CCD_ROWS
from cscs.camera.sky import within_radius
from cscs.ocs_batch.photometry import Reference

__all__ = [
    "MAX_SHARDS",
    "MAX_STARS",
    "ReferenceCatalog",
    "ReferenceStars",
    "detector_reference",
    "list_shards",
    "load_reference_catalog",
    "write_reference_shard",
]

Array = npt.NDArray[np.float64]
Magnitudes = npt.NDArray[np.float32]
MAX_SHARDS = 100_000
MAX_STARS = 50_000_000  # ~2 GB in memory with six bands: a wide survey's bright stars
MAX_BANDS = 16
_BAND_COLUMN = re.compile(r"[a-z0-9]{1,8}_mag")
_CELESTIAL_TYPE = re.compile(r"(RA---|DEC--)[A-Z]{3}")  # no distortion (-SIP, -TPV) here
_EXTNAME = "REFCAT"
_WCS_TEXT = ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "RADESYS")
_WCS_NUMBERS = ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
                "EQUINOX")  # fmt: skip


@dataclass(frozen=True)
class ReferenceStars:
    """Stars of one cone, as parallel arrays: positions and magnitudes in one band."""

    ra: Array
    dec: Array
    magnitude: Array

    def __len__(self) -> int:
        return len(self.ra)


@dataclass(frozen=True)
class ReferenceCatalog:
    """Every shard's stars, sorted by declination; magnitudes by band (NaN: unknown)."""

    ra: Array
    dec: Array
    magnitudes: Mapping[str, Magnitudes]
    shards: int

    def __len__(self) -> int:
        return len(self.ra)

    def near(self, ra: float, dec: float, radius: float, band: str) -> ReferenceStars:
        """The stars within ``radius`` degrees of (ra, dec) that have a magnitude in
        ``band`` (none if the catalog has no such band)."""
        magnitude = self.magnitudes.get(band)
        if magnitude is None or not len(self):
            return ReferenceStars(np.zeros(0), np.zeros(0), np.zeros(0))
        first, last = np.searchsorted(self.dec, [dec - radius, dec + radius], side="left")
        ras, decs = self.ra[first:last], self.dec[first:last]
        mags = magnitude[first:last].astype(np.float64)
        inside = within_radius(ras, decs, ra, dec, radius) & np.isfinite(mags)
        return ReferenceStars(ras[inside], decs[inside], mags[inside])


def detector_reference(
    header: Mapping[str, object],
    catalog: ReferenceCatalog,
    pixel_scale: float,
    match_radius: float,
) -> Reference | None:
    """The catalog's stars on one detector, in its pixels by the primary header's
    celestial WCS (astropy reads it, as any user's code would), in the header's band
    (``FILTBAND``); None when the header lacks what that needs or says no light fell."""
    from astropy.wcs import WCS

    band, exposure_time = header.get("FILTBAND"), header.get("EXPTIME")
    if not isinstance(band, str) or not isinstance(exposure_time, int | float):
        return None
    if not exposure_time > 0 or "CTYPE1" not in header:
        return None
    keywords = _wcs_keywords(header)
    if keywords is None:
        return None
    try:
        wcs = WCS(keywords)
        ra, dec = wcs.all_pix2world([(CCD_COLS - 1) / 2], [(CCD_ROWS - 1) / 2], 0)
    except Exception:  # astropy's many kinds of error on values from a file: no WCS
        return None
    if not (np.isfinite(ra[0]) and np.isfinite(dec[0])):
        return None
    radius = math.hypot(CCD_COLS, CCD_ROWS) / 2 * pixel_scale / 3600.0 * 1.05
    stars = catalog.near(float(ra[0]), float(dec[0]), radius, band.strip().lower())
    try:
        x, y = wcs.all_world2pix(stars.ra, stars.dec, 0)
    except Exception:  # as above
        return None
    return Reference(
        np.asarray(x, dtype=np.float64),
        np.asarray(y, dtype=np.float64),
        stars.magnitude,
        float(exposure_time),
        match_radius / pixel_scale,
    )


def _wcs_keywords(header: Mapping[str, object]) -> dict[str, object] | None:
    """The celestial WCS keywords (the CD form our raws write), each of the type it must
    be; None if one that must be there is not, or is not what it must be."""
    keywords: dict[str, object] = {"WCSAXES": 2}
    for name in _WCS_TEXT:
        value = header.get(name)
        if value is None and name.startswith(("CUNIT", "RADESYS")):
            continue
        if not isinstance(value, str) or len(value) > 70 or not value.isprintable():
            return None
        if name.startswith("CTYPE") and not _CELESTIAL_TYPE.fullmatch(value.strip()):
            return None  # a projection with distortion terms this reader would drop
        keywords[name] = value.strip()
    for name in _WCS_NUMBERS:
        value = header.get(name)
        if value is None and name == "EQUINOX":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        try:
            number = float(value)
        except OverflowError:
            return None
        if not math.isfinite(number):
            return None
        keywords[name] = number
    return keywords


def load_reference_catalog(directory: Path) -> ReferenceCatalog | None:
    """The catalog in ``directory`` (None if there is none: no directory or no shard);
    ValueError naming the shard that is not one, the directory that cannot be read, or
    a catalog over the bounds."""
    entries = list_shards(directory)
    return _load(str(directory), entries) if entries else None


def list_shards(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """The shards' (name, size, modification time), sorted: what the catalog is made of
    now. Empty if the directory does not exist; ValueError if it cannot be listed."""
    try:
        entries = []
        with os.scandir(directory) as listing:
            for entry in listing:
                if not entry.name.endswith(".fits") or entry.name.startswith("."):
                    continue  # being written (``.name.partial``), or not a shard
                if entry.is_file():
                    status = entry.stat()
                    entries.append((entry.name, status.st_size, status.st_mtime_ns))
                if len(entries) > MAX_SHARDS:
                    raise ValueError(f"more than {MAX_SHARDS} reference shards")
    except FileNotFoundError as exc:
        if exc.filename is not None and Path(exc.filename) == directory:
            return ()
        raise ValueError(
            f"reference catalog {directory}: a shard went while listed: {exc}"
        ) from exc
    except OSError as exc:
        raise ValueError(f"reference catalog {directory}: cannot list it: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"reference catalog {directory}: {exc}") from exc
    return tuple(sorted(entries))


@functools.lru_cache(maxsize=1)
def _load(directory: str, entries: tuple[tuple[str, int, int], ...]) -> ReferenceCatalog:
    shards: list[tuple[Array, Array, dict[str, Magnitudes]]] = []
    total = 0
    for name, _, _ in entries:
        shard = _read_shard(Path(directory) / name, MAX_STARS - total)
        total += len(shard[0])
        shards.append(shard)
    bands = sorted({band for _, _, magnitudes in shards for band in magnitudes})
    if len(bands) > MAX_BANDS:
        raise ValueError(f"reference catalog {directory}: more than {MAX_BANDS} bands")
    ra = np.concatenate([ra for ra, _, _ in shards])
    dec = np.concatenate([dec for _, dec, _ in shards])
    order = np.argsort(dec, kind="stable")
    magnitudes = {
        # A band a shard lacks is unknown (NaN) for that shard's stars.
        band: np.concatenate(
            [m.get(band, np.full(len(r), np.nan, dtype=np.float32)) for r, _, m in shards]
        )[order]
        for band in bands
    }
    return ReferenceCatalog(ra[order], dec[order], magnitudes, len(entries))


def _read_shard(path: Path, room: int) -> tuple[Array, Array, dict[str, Magnitudes]]:
    """One shard's stars on the sky: RA, Dec and magnitude per band; ValueError naming
    it if it is not a reference table, or holds more than ``room`` stars."""
    import fitsio

    try:
        with fitsio.FITS(str(path)) as hdus:
            table = hdus[_EXTNAME] if _EXTNAME in hdus else hdus[1]
            columns = {c.lower(): c for c in table.get_colnames()}
            if "ra" not in columns or "dec" not in columns:
                raise ValueError("no ra and dec columns")
            if table.get_nrows() > room:
                raise ValueError(f"the catalog would hold more than {MAX_STARS} stars")
            bands = {c.removesuffix("_mag"): name for c, name in columns.items()
                     if _BAND_COLUMN.fullmatch(c)}  # fmt: skip
            wanted = [columns["ra"], columns["dec"], *bands.values()]
            data = table.read(columns=wanted)
        ra = np.asarray(data[columns["ra"]], dtype=np.float64)
        dec = np.asarray(data[columns["dec"]], dtype=np.float64)
        values = {b: np.asarray(data[c], dtype=np.float32) for b, c in bands.items()}
        columns_read: list[npt.NDArray[Any]] = [ra, dec, *values.values()]
        if any(v.ndim != 1 or len(v) != len(ra) for v in columns_read):
            raise ValueError("columns are not one value per star")
        with np.errstate(invalid="ignore"):
            on_sky = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
    except (OSError, KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"reference shard {path}: not a reference table: {exc}") from exc
    return ra[on_sky] % 360.0, dec[on_sky], {b: v[on_sky] for b, v in values.items()}


def write_reference_shard(
    path: Path, ra: Array, dec: Array, magnitudes: Mapping[str, Array]
) -> None:
    """One shard, whole or not at all (written aside, then renamed)."""
    if not magnitudes:
        raise ValueError("a reference shard needs at least one band")
    dtype = [("ra", "f8"), ("dec", "f8")] + [(f"{band}_mag", "f4") for band in magnitudes]
    table = np.zeros(len(ra), dtype=dtype)
    table["ra"], table["dec"] = ra, dec
    for band, values in magnitudes.items():
        table[f"{band}_mag"] = values
    write_with_fitsio(path, [], [([("EXTNAME", _EXTNAME, "reference stars")], table)])
