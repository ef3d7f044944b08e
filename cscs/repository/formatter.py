"""How the Butler reads (and writes) our FITS files: ``butler.get("raw", …)`` gives back
an astropy ``HDUList``, the primary header and every amplifier's pixels exactly as the
file holds them.

``obs_lsst``'s formatters assemble an ``Exposure`` with the observatory's C++ stack,
which is not on PyPI; astropy reads every file we write (plain or tile-compressed).
The whole file is read into memory and closed before the list is handed back: the
caller holds no open file handle, so the archive may rewrite or clean the file later.
The repository's seed configuration names this class for the ``RawFits`` storage
class (:mod:`cscs.repository.config`), so every process, ``butler`` included, finds it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from astropy.io import fits
from lsst.daf.butler import FormatterV2
from lsst.resources import ResourcePath

__all__ = ["FitsFormatter"]


class FitsFormatter(FormatterV2):
    """A FITS file as an astropy ``HDUList``, wholly in memory."""

    default_extension: ClassVar[str | None] = ".fits"
    supported_extensions: ClassVar[frozenset[str]] = frozenset({".fits", ".fz"})
    can_read_from_local_file: ClassVar[bool] = True

    def read_from_local_file(
        self, path: str, component: str | None = None, expected_size: int = -1
    ) -> Any:
        hdus = fits.open(path, memmap=False, lazy_load_hdus=False)
        try:
            for hdu in hdus:
                _ = hdu.data  # read (and decompress) now, while the file is open
        finally:
            hdus.close()
        return hdus

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        if not isinstance(in_memory_dataset, fits.HDUList):
            raise TypeError(f"expected an astropy HDUList, got {type(in_memory_dataset).__name__}")
        in_memory_dataset.writeto(uri.ospath, checksum=True)
