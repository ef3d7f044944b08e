"""A raw file's header blocks, with the ``CHECKSUM`` and ``DATASUM`` the FITS checksum
convention asks for: made in microseconds, because the archiver makes one per
extension, seventeen per file.

Cards are formatted by astropy (``Card``), once per distinct keyword, value and comment
(:func:`_formatted`): the same cards recur in every file of an image and in every image.
A header is their images joined, the ``END`` card and the padding, as astropy's own
``Header.tostring`` makes it; astropy's ``Header`` itself, which costs ~1 ms per header
to place ~100 cards, is used only where its placing rules matter (commentary cards,
which it moves after the others, and sum cards given by the caller). An extension
header repeats from file to file, so each distinct one is made once
(:func:`template`); only its two sums change (:meth:`HeaderTemplate.finish`), and the
header's own ones'-complement sum is known from the template's plus the two cards.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.io import fits

__all__ = [
    "BLOCK", "Card", "HeaderTemplate", "KeyedCards", "datasum", "encode_checksum", "template",
]  # fmt: skip

BLOCK = 2880
CARD = 80
Card = tuple[str, Any, str]  # keyword, value (None: undefined), comment
TypedCard = tuple[str, Any, str, object]  # a card and its _kind

_SUM_KEYWORDS = ("CHECKSUM", "DATASUM")
#: Commentary cards, which astropy's ``Header`` puts after every valued card (and after
#: the two sums): the rule is simple for these two.
_NOTES = frozenset({"COMMENT", "HISTORY"})
#: Cards whose placing by astropy is not that simple: blank cards (which later cards
#: replace), sum cards given by the caller (kept where they are), END.
_PLACED = frozenset({"", "END", *_SUM_KEYWORDS})
_EXCLUDE = {*range(0x3A, 0x41), *range(0x5B, 0x61)}


# ---- the sums -------------------------------------------------------------------------


def _fold(total: int) -> int:
    """End-around carry: a 64-bit sum of 32-bit words to a 32-bit ones'-complement sum."""
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def datasum(words: npt.NDArray[Any]) -> int:
    """Ones'-complement sum of 32-bit words given as native ``uint32`` values."""
    return _fold(int(np.add.reduce(words.reshape(-1), dtype=np.uint64)))


def _bytes_sum(data: bytes | bytearray) -> int:
    """The ones'-complement sum of big-endian 32-bit words (``data``: whole words)."""
    return datasum(np.frombuffer(data, dtype=">u4").astype(np.uint32))


_CARD_WORDS = struct.Struct(f">{CARD // 4}I")


def _card_sum(card: bytes) -> int:
    """:func:`_bytes_sum` of one 80-byte card, without numpy's per-call overhead."""
    return _fold(sum(_CARD_WORDS.unpack(card)))


def _byte_characters(byte: int) -> tuple[int, int, int, int]:
    """The four characters one byte of a checksum contributes (FITS checksum convention:
    each byte spread over four printable characters, none of them punctuation)."""
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
    return ch[0], ch[1], ch[2], ch[3]


# Each byte's characters depend on that byte alone: a table, not a loop per file.
_CHARACTERS = tuple(_byte_characters(byte) for byte in range(256))


def encode_checksum(value: int) -> str:
    """The 16-character ASCII encoding of a 32-bit checksum (FITS checksum convention)."""
    characters = [0] * 16
    for i in range(4):
        ch = _CHARACTERS[(value >> (24 - 8 * i)) & 0xFF]
        for j in range(4):
            characters[4 * j + i] = ch[j]
    return bytes(characters[15:] + characters[:15]).decode("ascii")


# ---- cards ----------------------------------------------------------------------------


def _kind(value: Any) -> object:
    """What tells apart values a cache would take for equal but astropy formats
    differently: ``True`` and ``1``, ``0.0`` and ``-0.0``."""
    return (float, repr(value)) if isinstance(value, float) else type(value)


@functools.lru_cache(maxsize=16384)  # LSSTCam: ~100 primary cards, 189 x ~40 detector cards
def _formatted(keyword: str, value: Any, comment: str, kind: object) -> fits.Card:
    """A card, its image formatted once (``kind``: :func:`_kind`). Never changed once
    made (the two sums, the only cards a header changes, are never taken from here)."""
    card = fits.Card(keyword, value if value is not None else fits.card.UNDEFINED, comment)
    card.image  # noqa: B018  formatted (and verified) now, once
    return card


@functools.lru_cache(maxsize=16)
def _sum_card(keyword: str, width: int, comment: str) -> tuple[bytes, int]:
    """A string card for a value of ``width`` characters, as astropy formats it, and where
    its value starts: the sums change per HDU, their cards' layout does not."""
    placeholder = "#" * width
    image = fits.Card(keyword, placeholder, comment).image.encode("ascii")
    return image, image.index(placeholder.encode())


def _string_card(keyword: str, value: str, comment: str) -> bytes:
    card, at = _sum_card(keyword, len(value), comment)
    return card[:at] + value.encode("ascii") + card[at + len(value) :]


_CHECKSUM_PLACEHOLDER = ("CHECKSUM", "0" * 16, "HDU checksum")
_DATASUM_PLACEHOLDER = ("DATASUM", "0", "data unit checksum")
_END = b"END".ljust(CARD)


# ---- headers --------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderTemplate:
    """A header's bytes with placeholder sums, where its two sum cards are, and the
    ones'-complement sum of all its bytes but the ``DATASUM`` card's (the ``CHECKSUM``
    card counted with its placeholder of zeros, as the convention sums it)."""

    text: bytes
    checksum_at: int
    datasum_at: int
    other_sum: int

    def finish(self, data_sum: int) -> bytes:
        """The header with its ``DATASUM`` and the ``CHECKSUM`` that makes the HDU's
        ones'-complement sum -0, its data's sum being ``data_sum``. Cards start at
        multiples of 80 bytes, whole 32-bit words: a sum of cards is the sum of their
        sums, so the header is never summed again."""
        datasum_card = _string_card("DATASUM", str(data_sum), "data unit checksum")
        total = _fold(self.other_sum + _card_sum(datasum_card) + data_sum)
        checksum_card = _string_card("CHECKSUM", encode_checksum(~total & 0xFFFFFFFF),
                                     "HDU checksum")  # fmt: skip
        header = bytearray(self.text)
        header[self.datasum_at : self.datasum_at + CARD] = datasum_card
        header[self.checksum_at : self.checksum_at + CARD] = checksum_card
        return bytes(header)


class KeyedCards(Sequence[Card]):
    """Cards, and the key that tells their headers apart (each card with its
    :func:`_kind`), made once: an amplifier's geometry (~110 cards) is the same in every
    file, and keying it anew for each of a file's 16 extensions cost as much as the
    rest of their headers. Equal when their keys are."""

    __slots__ = ("_cards", "_hash", "key")

    def __init__(self, cards: Iterable[Card], key: tuple[TypedCard, ...] | None = None) -> None:
        self._cards = tuple(cards)
        self.key = key if key is not None else tuple((k, v, c, _kind(v)) for k, v, c in self._cards)
        self._hash = hash(self.key)

    def __getitem__(self, index: Any) -> Any:
        return self._cards[index]

    def __len__(self) -> int:
        return len(self._cards)

    def __add__(self, other: KeyedCards) -> KeyedCards:
        return KeyedCards(self._cards + other._cards, self.key + other.key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyedCards) and self.key == other.key

    def __reduce__(self) -> tuple[type[KeyedCards], tuple[tuple[Card, ...]]]:
        """Pickled as its cards (to a compression worker): the hash of text differs
        from process to process, so another process keys them anew."""
        return KeyedCards, (self._cards,)


def template(cards: Iterable[Card] | KeyedCards, *, reuse: bool = True) -> HeaderTemplate:
    """The template of a header of ``cards``, then ``CHECKSUM`` and ``DATASUM`` (unless
    ``cards`` place them). ``reuse``: kept for the next header of the same cards (an
    extension's); a primary header, which names its file, is made afresh."""
    keyed = cards if isinstance(cards, KeyedCards) else KeyedCards(cards)
    return _reused_template(keyed) if reuse else _make_template(keyed)


@functools.lru_cache(maxsize=4096)  # LSSTCam: 189 detectors x 16 segments
def _reused_template(cards: KeyedCards) -> HeaderTemplate:
    return _make_template(cards)


def _make_template(cards: KeyedCards) -> HeaderTemplate:
    keywords = [keyword.strip().upper() for keyword, _, _ in cards]
    if any(keyword in _PLACED for keyword in keywords):
        text = _placed_by_astropy(cards)
    else:  # as astropy's Header places them, without its ~10 us per card of placing
        typed = cards.key
        valued = [_image(c) for c, k in zip(typed, keywords, strict=True) if k not in _NOTES]
        notes = [_image(c) for c, k in zip(typed, keywords, strict=True) if k in _NOTES]
        sums = [_string_card(*_CHECKSUM_PLACEHOLDER), _string_card(*_DATASUM_PLACEHOLDER)]
        text = b"".join(valued + sums + notes) + _END
        text += b" " * (-len(text) % BLOCK)
    checksum_at, datasum_at = _card_offset(text, "CHECKSUM"), _card_offset(text, "DATASUM")
    others = bytearray(text)
    others[datasum_at : datasum_at + CARD] = bytes(CARD)
    return HeaderTemplate(text, checksum_at, datasum_at, _bytes_sum(others))


def _image(card: TypedCard) -> bytes:
    image: str = _formatted(*card).image
    return image.encode("ascii")


def _placed_by_astropy(cards: KeyedCards) -> bytes:
    """The header as astropy's ``Header`` places the cards: commentary cards after the
    others, a sum card given by the caller kept where it is."""
    header = fits.Header()
    for keyword, value, comment, kind in cards.key:
        if keyword in _SUM_KEYWORDS:  # set below, in the header's own card
            header.append(fits.Card(keyword, value, comment))
        else:
            header.append(_formatted(keyword, value, comment, kind))
    header["CHECKSUM"] = _CHECKSUM_PLACEHOLDER[1:]
    header["DATASUM"] = _DATASUM_PLACEHOLDER[1:]
    text: str = header.tostring(padding=True)
    return text.encode("ascii")


def _card_offset(text: bytes, keyword: str) -> int:
    """Where ``keyword``'s card starts: searched card by card (every 80 bytes), never in
    the text at large, where a value such as a target name could contain it."""
    key = f"{keyword:<8}=".encode()
    for offset in range(0, len(text), CARD):
        if text[offset : offset + 9] == key:
            return offset
    raise ValueError(f"no {keyword} card in the header")
