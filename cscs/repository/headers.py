"""A raw file's primary header, read as cheaply as registering needs: only the primary
header's blocks are read (one ``read`` for our headers, whatever the pixels weigh), and
a card's value is parsed only when asked for. Parsing is what costs: astropy takes
~60 µs per card, ~10 ms for a raw's ~170 cards, while the records need ~25 of them
(``cscs.repository.records``); for LSSTCam's 189 files per image that is ~1.5 s saved.

Values are astropy's (the header is parsed by ``astropy.io.fits.Header``): an undefined
value is None; commentary cards (``COMMENT``, ``HISTORY``, blank) are left out; a
keyword given twice has its last value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from astropy.io import fits

__all__ = ["HeaderValues", "read_header_values", "read_primary_header"]

_BLOCK = 2880  # bytes of a FITS block: 36 cards of 80 characters
_CARD = 80
_READ = 16 * _BLOCK  # what one read asks for: a raw's primary header is ~5 blocks
_MAX_BYTES = 1000 * _BLOCK  # 36 000 cards: past that, the file is not a header we wrote
_COMMENTARY = ("COMMENT", "HISTORY", "")


class HeaderValues(Mapping[str, Any]):
    """A primary header's keyword → value, each value parsed on first use. KeyError for
    a keyword not there; ValueError naming the keyword for a value that cannot be
    parsed."""

    def __init__(self, header: fits.Header) -> None:
        self._cards = list(header.cards)
        self._index = {
            card.keyword: i for i, card in enumerate(self._cards) if card.keyword not in _COMMENTARY
        }

    def __getitem__(self, keyword: str) -> Any:
        card = self._cards[self._index[keyword]]
        try:
            value = card.value
        except Exception as exc:  # astropy raises several kinds for a malformed card
            raise ValueError(f"{keyword}: its value cannot be read ({exc})") from None
        return None if isinstance(value, fits.card.Undefined) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def read_header_values(path: Path) -> HeaderValues:
    """``path``'s primary header, its values parsed when asked; OSError naming the file
    if it cannot be read or is not FITS."""
    try:
        return HeaderValues(fits.Header.fromstring(_primary_header_bytes(path)))
    except OSError as exc:
        why = exc.strerror or exc
        raise OSError(f"cannot read the primary header of {path}: {why}") from exc
    except Exception as exc:  # astropy raises several kinds for a card it cannot take
        raise OSError(f"cannot read the primary header of {path}: {exc}") from exc


def read_primary_header(path: Path) -> dict[str, Any]:
    """A file's primary header as keyword → value, every value parsed (for a reader of
    all of them, such as ConsDB's). OSError if it is not a readable FITS file."""
    values = read_header_values(path)
    try:
        return dict(values)
    except ValueError as exc:
        raise OSError(f"cannot read the primary header of {path}: {exc}") from exc


def _primary_header_bytes(path: Path) -> bytes:
    """The blocks of the primary header, up to the one holding its ``END`` card."""
    read = b""
    with Path(path).open("rb") as handle:
        while True:
            chunk = handle.read(_READ)
            if not read and not chunk.startswith(b"SIMPLE  ="):
                raise OSError("not a FITS file (it does not start with SIMPLE)")
            start = len(read) - len(read) % _BLOCK
            read += chunk
            end = _end_of_header(read, start)
            if end:
                return read[:end]
            if len(chunk) < _READ:
                raise OSError("the file ends before its primary header's END card")
            if len(read) >= _MAX_BYTES:
                raise OSError(f"no END card in the first {_MAX_BYTES} bytes")


def _end_of_header(data: bytes, start: int) -> int:
    """The end of the block holding the ``END`` card, looked for from card ``start``
    on (a card boundary); 0 if not in the whole blocks of ``data``."""
    whole = len(data) - len(data) % _BLOCK
    for offset in range(start, whole, _CARD):
        if data[offset : offset + 8] == b"END     ":
            return offset - offset % _BLOCK + _BLOCK
    return 0
