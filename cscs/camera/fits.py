"""Writing raw multi-extension FITS files: the one place every archived file is made.

Layout (ICD §6): a header-only primary HDU with the observation's keywords, then one
``IMAGE`` extension per amplifier segment, each with ``CHECKSUM`` and ``DATASUM``.

Why not hand it all to a library: the measured cost (``docs/performance.md``) is in
copies, byte order and cfitsio's second pass over the data for checksums. Here one
pass of a small C kernel (:mod:`cscs.camera._fitsdata`, ADR 0035) reads each pixel
once, writes it big-endian into its place in the file and adds it to its segment's
``DATASUM`` (the ones'-complement sum of the same 32-bit values, whatever their byte
order), for all the segments of a file in one call; the file is laid
out whole in a reused page-aligned buffer and written from it with direct I/O
(:func:`~cscs.camera.files.write_buffer_atomically`). Its checksum (Adler-32 by
default, :mod:`cscs.camera.checksum`) is put together from the headers' and from each
segment's, which the same pass takes block by block while the block is in cache (ADR
0041); MD5 is taken from the buffer while the disk writes it. The header blocks come
from :mod:`~cscs.camera.fits_header` (cards formatted by astropy, each once; astropy's
reader verifies the result in the tests). Tile compression
(``RICE_1``) goes through ``fitsio`` (cfitsio), which does it well; that path lets
cfitsio write the checksums.
"""

from __future__ import annotations

import contextlib
import functools
import math
import mmap
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cscs.camera._fitsdata import adler32, lay_out
from cscs.camera.checksum import Algorithm, adler32_combine, buffer_checksum, file_checksum
from cscs.camera.datasums import check_datasums, verify_segments
from cscs.camera.files import (
    direct_length,
    temporary_name,
    write_buffer_atomically,
    write_buffer_durably,
)
from cscs.camera.fits_header import (
    BLOCK,
    Card,
    KeyedCards,
    datasum,
    encode_checksum,
    template,
)

__all__ = [
    "BLOCK",
    "Card",
    "WrittenFile",
    "commit",
    "datasum",
    "encode_checksum",
    "temporary_name",
    "write_raw_fits",
    "write_unsynced",
    "write_with_fitsio",
]


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    byte_size: int
    checksum: str  # of the whole file, lowercase hex (cscs.camera.checksum)
    checksum_algorithm: Algorithm
    temporary: Path | None = None
    """Where the bytes are, whole and synced, while not yet under ``path`` (written with
    ``publish=False``: the archive store names it once its catalog has the row)."""


def _image_cards(shape: tuple[int, ...], extra: Sequence[Card] | KeyedCards) -> KeyedCards:
    """An image extension's cards: its structure's, then ``extra``. Keyed ``extra``
    (:class:`~cscs.camera.fits_header.KeyedCards`, an amplifier's geometry kept by the
    writer) gives the same object each time, so that the template's cache finds it by
    identity, without comparing ~120 cards."""
    rows, columns = shape
    if isinstance(extra, KeyedCards):
        return _keyed_image_cards(rows, columns, extra)
    return _structure_cards(rows, columns) + KeyedCards(extra)


@functools.lru_cache(maxsize=4096)  # LSSTCam: 205 detectors x 16 segments
def _keyed_image_cards(rows: int, columns: int, extra: KeyedCards) -> KeyedCards:
    return _structure_cards(rows, columns) + extra


@functools.lru_cache(maxsize=16)
def _structure_cards(rows: int, columns: int) -> KeyedCards:
    return KeyedCards([
        ("XTENSION", "IMAGE", "image extension"),
        ("BITPIX", 32, "32-bit integers"),
        ("NAXIS", 2, ""),
        ("NAXIS1", columns, "columns"),
        ("NAXIS2", rows, "rows"),
        ("PCOUNT", 0, ""),
        ("GCOUNT", 1, ""),
    ])  # fmt: skip


def write_raw_fits(
    path: Path,
    primary: Sequence[Card],
    extensions: Sequence[tuple[Sequence[Card] | KeyedCards, npt.NDArray[np.int32]]],
    *,
    datasums: Sequence[int],
    compression: str = "",
    checksum: Algorithm = "adler32",
    publish: bool = True,
) -> WrittenFile:
    """Write a raw file atomically: it appears at ``path`` only when complete. Without
    ``publish``, it is left whole and synced under a temporary name beside ``path``
    (:attr:`WrittenFile.temporary`) for the caller to rename.

    ``datasums``: what each segment's ``DATASUM`` must be, as its source said (the DAQ
    sends them, ADR 0041). They are compared with the sums of the pixels as laid out,
    before any byte reaches the disk: DataSumMismatchError, and no file, if one differs.
    Required, so that no raw file is written from pixels nobody vouched for."""
    if compression:
        verify_segments([pixels for _, pixels in extensions], datasums)
        return write_with_fitsio(
            path, primary, extensions, compression=compression, checksum=checksum,
            publish=publish,
        )  # fmt: skip
    primary_header = template(
        [("SIMPLE", True, "conforms to FITS"), ("BITPIX", 8, ""), ("NAXIS", 0, ""),
         ("EXTEND", True, "extensions follow"), *primary],
        reuse=False,  # it names its file: never the same twice
    ).finish(0)  # fmt: skip
    # Headers have the same length whatever their sums: every segment's place in the
    # file is known before any pixel is read, so one call lays them all out (and sums
    # them), and only then are the headers, which carry the sums, put before each.
    templates, offsets, segments = [], [], []
    position = len(primary_header)
    for cards, pixels in extensions:
        if pixels.dtype != np.int32 or pixels.ndim != 2:
            raise ValueError(f"segments must be 2-D int32, got {pixels.dtype} {pixels.shape}")
        extension = template(_image_cards(pixels.shape, cards))
        position += len(extension.text)
        templates.append(extension)
        offsets.append(position)
        segments.append(np.ascontiguousarray(pixels))
        position += _padded(pixels.nbytes)
    size = position
    fused = checksum == "adler32"  # MD5 cannot be put together from parts: its own pass
    with _STAGING.lease(direct_length(size)) as staging:
        sums, adlers = lay_out(staging, offsets, segments, fused)
        check_datasums(sums, datasums)  # corrupted on the way: nothing written
        staging[: len(primary_header)] = primary_header
        file_adler = adler32(primary_header)
        for i, (extension, offset, data_sum) in enumerate(
            zip(templates, offsets, sums, strict=True)
        ):
            header = extension.finish(data_sum)
            staging[offset - len(header) : offset] = header
            if fused:  # the file's Adler-32: headers here, segments from the one pass
                file_adler = adler32(header, file_adler)
                file_adler = adler32_combine(file_adler, adlers[i], _padded(segments[i].nbytes))
        view = memoryview(staging)
        summing = (
            _done(f"{file_adler:08x}")
            if fused
            else _HASHERS.submit(buffer_checksum, checksum, view[:size])
        )
        temporary = None if publish else temporary_name(path)
        try:
            if temporary is None:
                write_buffer_atomically(path, view, size)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    write_buffer_durably(temporary, view, size)
                except BaseException:
                    temporary.unlink(missing_ok=True)
                    raise
        finally:
            digest = summing.result()  # the buffer is not handed back while being summed
            view.release()
    return WrittenFile(path, size, digest, checksum, temporary)


def _done(value: str) -> Future[str]:
    future: Future[str] = Future()
    future.set_result(value)
    return future


def _padded(nbytes: int) -> int:
    return -(-nbytes // BLOCK) * BLOCK


class _StagingBuffers:
    """Page-aligned buffers (anonymous ``mmap``) reused from file to file.

    Reuse is the point: a fresh buffer's pages cost a fault and a zeroing each, as much
    as the byte swap itself. As many exist as files were ever written at once (the
    archiver bounds that by ``sensors_in_flight``); a few idle ones are kept.
    """

    def __init__(self, keep: int = 8) -> None:
        self._idle: list[mmap.mmap] = []
        self._lock = threading.Lock()
        self._keep = keep

    @contextlib.contextmanager
    def lease(self, size: int) -> Iterator[mmap.mmap]:
        with self._lock:
            fitting = [b for b in self._idle if len(b) >= size]
            buffer = min(fitting, key=len) if fitting else None
            if buffer is not None:
                self._idle.remove(buffer)
        if buffer is None:
            buffer = mmap.mmap(-1, direct_length(size))
        try:
            yield buffer
        finally:
            with self._lock:
                self._idle.append(buffer)
                if len(self._idle) > self._keep:
                    self._idle.sort(key=len)
                    del self._idle[0]  # unmapped once the last view of it is gone


_STAGING = _StagingBuffers()
# The file's checksum (either algorithm releases the GIL) is computed beside the write it
# checks: the disk and a core work at once. A handful of threads: one per file written.
_HASHERS = ThreadPoolExecutor(8, thread_name_prefix="fits-checksum")


def write_with_fitsio(
    path: Path,
    primary: Sequence[Card],
    extensions: Sequence[tuple[Sequence[Card], npt.NDArray[Any]]],
    *,
    compression: str = "",
    checksum: Algorithm = "adler32",
    publish: bool = True,
) -> WrittenFile:
    """Write any FITS file (tile-compressed raws, calibration products of any pixel
    type) atomically, through cfitsio: ``CHECKSUM``/``DATASUM`` in every HDU, the file
    under ``path`` only once whole and synced. Slower than :func:`write_raw_fits` for
    raws; for everything else, the one way."""
    temporary = temporary_name(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        size, digest = write_unsynced(
            temporary, primary, extensions, compression=compression, checksum=checksum
        )
        commit(temporary, path, publish=publish)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return WrittenFile(path, size, digest, checksum, None if publish else temporary)


def write_unsynced(
    temporary: Path,
    primary: Sequence[Card],
    extensions: Sequence[tuple[Sequence[Card], npt.NDArray[Any]]],
    *,
    compression: str,
    checksum: Algorithm,
) -> tuple[int, str]:
    """The CPU's part of :func:`write_with_fitsio`: the file written through cfitsio
    (checksums in every HDU) and its size and checksum, not yet synced or renamed. A
    compression worker does this much and leaves the waiting for the disk to the
    caller (:func:`commit`), so that it can start on the next file at once."""
    import fitsio  # only this path needs cfitsio

    with fitsio.FITS(str(temporary), "rw", clobber=True) as out:
        out.write(None, header=[_fitsio_card(c) for c in primary])
        out[-1].write_checksum()
        for cards, pixels in extensions:
            name = next((v for k, v, _ in cards if k == "EXTNAME"), None)
            header = [_fitsio_card(c) for c in cards if c[0] != "EXTNAME"]
            out.write(pixels, header=header, extname=name, compress=compression or None)
            out[-1].write_checksum()
    return temporary.stat().st_size, file_checksum(checksum, temporary)


def commit(temporary: Path, path: Path, *, publish: bool = True) -> None:
    """Make a written file durable and (``publish``) give it its name: it appears whole
    or not at all."""
    fd = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if publish:
        os.replace(temporary, path)


def _fitsio_card(card: Card) -> dict[str, Any]:
    keyword, value, comment = card
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    return {"name": keyword, "value": value, "comment": comment}
