"""Writing raw multi-extension FITS files: the one place every archived file is made.

Layout (ICD §6): a header-only primary HDU with the observation's keywords, then one
``IMAGE`` extension per amplifier segment, each with ``CHECKSUM`` and ``DATASUM``.

Why not hand it all to a library: the measured cost (``../shared/PERFORMANCE.md``)
is in copies, byte order and cfitsio's second pass over the data for checksums. Here
each segment is byte-swapped to big-endian once, its ``DATASUM`` is the ones'-complement
sum of the native words (the same 32-bit values, so no second swap), and the MD5 of the
file is fed the very bytes written. Cards are formatted by astropy (``Header``), whose
reader verifies the result in the tests. Tile compression (``RICE_1``) goes through
``fitsio`` (cfitsio), which does it well; that path lets cfitsio write the checksums.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import secrets
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from cscs.core.files import atomic_file

__all__ = ["Card", "WrittenFile", "datasum", "encode_checksum", "write_raw_fits"]

BLOCK = 2880
Card = tuple[str, Any, str]  # keyword, value (None: undefined), comment
_EXCLUDE = {*range(0x3A, 0x41), *range(0x5B, 0x61)}


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    byte_size: int
    md5: str


def _fold(total: int) -> int:
    """End-around carry: a 64-bit sum of 32-bit words to a 32-bit ones'-complement sum."""
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def datasum(words: npt.NDArray[Any]) -> int:
    """Ones'-complement sum of 32-bit words given as native ``uint32`` values."""
    return _fold(int(np.add.reduce(words.reshape(-1), dtype=np.uint64)))


def _bytes_sum(data: bytes) -> int:
    return datasum(np.frombuffer(data, dtype=">u4").astype(np.uint32))


def _add(a: int, b: int) -> int:
    return _fold(a + b)


def encode_checksum(value: int) -> str:
    """The 16-character ASCII encoding of a 32-bit checksum (FITS checksum convention)."""
    characters = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quotient, remainder = byte // 4 + 0x30, byte % 4
        ch = [quotient + remainder, quotient, quotient, quotient]
        changed = True
        while changed:
            changed = False
            for j in (0, 2):
                while ch[j] in _EXCLUDE or ch[j + 1] in _EXCLUDE:
                    ch[j] += 1
                    ch[j + 1] -= 1
                    changed = True
        for j in range(4):
            characters[4 * j + i] = ch[j]
    return bytes(characters[15:] + characters[:15]).decode("ascii")


@functools.lru_cache(maxsize=1024)
def _template(cards: tuple[Card, ...]) -> tuple[bytes, int, int]:
    """Header bytes with zeroed CHECKSUM and DATASUM, and the offsets of those two cards.

    Formatting cards with astropy costs ~1 ms per HDU; extension headers repeat from
    file to file, so each distinct one is formatted once and only the two sums change.
    """
    header = fits.Header()
    for keyword, value, comment in cards:
        header.append(
            fits.Card(keyword, value if value is not None else fits.card.UNDEFINED, comment)
        )
    header["CHECKSUM"] = ("0" * 16, "HDU checksum")
    header["DATASUM"] = ("0", "data unit checksum")
    text = header.tostring(padding=True).encode("ascii")
    checksum_at, datasum_at = (text.index(f"{k:<8}=".encode()) for k in ("CHECKSUM", "DATASUM"))
    return text, checksum_at, datasum_at


def _card(keyword: str, value: str, comment: str) -> bytes:
    image: str = fits.Card(keyword, value, comment).image
    return image.encode("ascii")


def _header_bytes(cards: Iterable[Card], data_sum: int | None) -> bytes:
    """The header block(s), with DATASUM and a CHECKSUM that makes the HDU sum -0."""
    template, checksum_at, datasum_at = _template(tuple(cards))
    text = bytearray(template)
    text[datasum_at : datasum_at + 80] = _card("DATASUM", str(data_sum or 0), "data unit checksum")
    total = _add(_bytes_sum(bytes(text)), data_sum or 0)
    checksum = encode_checksum(~total & 0xFFFFFFFF)
    text[checksum_at : checksum_at + 80] = _card("CHECKSUM", checksum, "HDU checksum")
    return bytes(text)


class _Md5Writer:
    """Writes and hashes the same bytes at once: MD5 runs in a thread of its own (hashlib
    releases the GIL), overlapping the write, the byte swap of the next segment and the
    disk. Buffers stay referenced until hashed; a file's worth at most."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.size = 0
        self._md5 = hashlib.md5()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="md5")
        self._pending: list[Future[None]] = []

    def write(self, data: bytes | memoryview) -> None:
        self._pending.append(self._hasher.submit(self._md5.update, data))
        self.stream.write(data)
        self.size += memoryview(data).nbytes

    def hexdigest(self) -> str:
        try:
            for future in self._pending:
                future.result()
            return self._md5.hexdigest()
        finally:
            self._hasher.shutdown(wait=True, cancel_futures=True)


def _image_cards(shape: tuple[int, int], extra: Sequence[Card]) -> list[Card]:
    rows, columns = shape
    return [
        ("XTENSION", "IMAGE", "image extension"),
        ("BITPIX", 32, "32-bit integers"),
        ("NAXIS", 2, ""),
        ("NAXIS1", columns, "columns"),
        ("NAXIS2", rows, "rows"),
        ("PCOUNT", 0, ""),
        ("GCOUNT", 1, ""),
        *extra,
    ]


def write_raw_fits(
    path: Path,
    primary: Sequence[Card],
    extensions: Sequence[tuple[Sequence[Card], npt.NDArray[np.int32]]],
    *,
    compression: str = "",
) -> WrittenFile:
    """Write a raw file atomically: it appears at ``path`` only when complete."""
    if compression:
        return _write_compressed(path, primary, extensions, compression)
    with atomic_file(path) as stream:
        out = _Md5Writer(stream)
        out.write(
            _header_bytes(
                [("SIMPLE", True, "conforms to FITS"), ("BITPIX", 8, ""), ("NAXIS", 0, ""),
                 ("EXTEND", True, "extensions follow"), *primary],
                None,
            )
        )  # fmt: skip
        for cards, pixels in extensions:
            if pixels.dtype != np.int32 or pixels.ndim != 2:
                raise ValueError(f"segments must be 2-D int32, got {pixels.dtype} {pixels.shape}")
            rows, columns = pixels.shape
            out.write(
                _header_bytes(_image_cards((rows, columns), cards), datasum(pixels.view(np.uint32)))
            )
            big_endian = pixels.astype(">i4")
            out.write(big_endian.data)
            padding = -big_endian.nbytes % BLOCK
            if padding:
                out.write(bytes(padding))
        return WrittenFile(path, out.size, out.hexdigest())


def _write_compressed(
    path: Path,
    primary: Sequence[Card],
    extensions: Sequence[tuple[Sequence[Card], npt.NDArray[np.int32]]],
    compression: str,
) -> WrittenFile:
    import fitsio  # only this path needs cfitsio

    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with fitsio.FITS(str(temporary), "rw", clobber=True) as out:
            out.write(None, header=[_fitsio_card(c) for c in primary])
            out[-1].write_checksum()
            for cards, pixels in extensions:
                name = next((v for k, v, _ in cards if k == "EXTNAME"), None)
                header = [_fitsio_card(c) for c in cards if c[0] != "EXTNAME"]
                out.write(pixels, header=header, extname=name, compress=compression)
                out[-1].write_checksum()
        with open(temporary, "rb") as stream:
            md5 = hashlib.file_digest(stream, "md5").hexdigest()
            size = os.fstat(stream.fileno()).st_size
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return WrittenFile(path, size, md5)


def _fitsio_card(card: Card) -> dict[str, Any]:
    keyword, value, comment = card
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    return {"name": keyword, "value": value, "comment": comment}
