"""A raw file's header blocks (``cscs.camera.fits_header``): the bytes astropy makes
from scratch, and sums that make every HDU's ones'-complement sum -0, whatever the
cards and the data."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st

from cscs.camera.fits_header import (
    BLOCK,
    Card,
    KeyedCards,
    _bytes_sum,
    _reused_template,
    _string_card,
    datasum,
    template,
)


def _astropys_header(cards: list[Card]) -> bytes:
    """A header as astropy makes it from scratch, every card formatted anew."""
    header = fits.Header()
    for keyword, value, comment in cards:
        header.append(fits.Card(keyword, fits.card.UNDEFINED if value is None else value, comment))
    header["CHECKSUM"] = ("0" * 16, "HDU checksum")
    header["DATASUM"] = ("0", "data unit checksum")
    text: str = header.tostring(padding=True)
    return text.encode("ascii")


_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=90)
_VALUED = st.tuples(
    st.sampled_from(["OBSID", "EXPTIME", "FLAG", "TEMP", "HIERARCH LONG KEY NAME"]),
    st.one_of(st.booleans(), st.integers(-2, 2), st.sampled_from([0.0, -0.0, 1.0, 1]),
              st.floats(allow_nan=False, allow_infinity=False), _TEXT, st.none()),
    st.sampled_from(["", "a comment", "x" * 70]),
)  # fmt: skip
_COMMENTARY = st.tuples(
    st.sampled_from(["COMMENT", "HISTORY", "", "history", "comment", "DATASUM"]), _TEXT, st.just("")
)
_CARDS = st.lists(st.one_of(_VALUED, _VALUED, _COMMENTARY), max_size=12)


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")  # truncated comments
@given(_CARDS, st.booleans())
def test_headers_of_cards_formatted_once_are_astropys_own(cards: list[Card], reuse: bool) -> None:
    """Cards formatted once and reused (True beside 1, 0.0 beside -0.0, long strings
    continued, commentary cards that astropy places after the others): the same header
    bytes as astropy makes from scratch, the first time and from the caches."""
    expected = _astropys_header(cards)
    assert template(cards, reuse=reuse).text == expected
    _reused_template.cache_clear()
    assert template(cards, reuse=reuse).text == expected


def _image_cards(rows: int, columns: int) -> list[Card]:
    return [("XTENSION", "IMAGE", "image extension"), ("BITPIX", 32, ""), ("NAXIS", 2, ""),
            ("NAXIS1", columns, ""), ("NAXIS2", rows, ""), ("PCOUNT", 0, ""),
            ("GCOUNT", 1, "")]  # fmt: skip


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
@given(
    cards=_CARDS,
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_hdu_sums_to_minus_zero_and_astropy_verifies_both_sums(
    cards: list[Card], shape: tuple[int, int], seed: int
) -> None:
    """The sums are taken from the template's and two cards' alone: the HDU they make
    must still sum to -0, and astropy's own check must agree with both."""
    pixels = np.random.default_rng(seed).integers(-(2**31), 2**31 - 1, shape, dtype=np.int32)
    data = pixels.astype(">i4").tobytes()
    data += bytes(-len(data) % BLOCK)
    header = template(_image_cards(*shape) + cards).finish(datasum(pixels.view(np.uint32)))
    assert _bytes_sum(header + data) == 0xFFFFFFFF  # -0: the HDU's sum with its CHECKSUM
    primary = template([("SIMPLE", True, ""), ("BITPIX", 8, ""), ("NAXIS", 0, ""),
                        ("EXTEND", True, "")], reuse=False).finish(0)  # fmt: skip
    with fits.open(io.BytesIO(primary + header + data), checksum=True) as hdus:
        assert hdus[0].verify_checksum() == 1
        assert hdus[1].verify_checksum() == 1
        assert hdus[1].verify_datasum() == 1
        np.testing.assert_array_equal(hdus[1].data, pixels)


@pytest.mark.parametrize("width", range(1, 17))
def test_the_sum_cards_are_astropys_own(width: int) -> None:
    """DATASUM and CHECKSUM are put into a card astropy formatted once per width: the
    same 80 bytes as astropy's for the value itself."""
    value = "7" * width
    for keyword, comment in (("DATASUM", "data unit checksum"), ("CHECKSUM", "HDU checksum")):
        assert (
            _string_card(keyword, value, comment)
            == fits.Card(keyword, value, comment).image.encode()
        )


@pytest.mark.broker  # the system tier: it starts a process
def test_keyed_cards_are_keyed_anew_in_another_process() -> None:
    """A hash of text is the process's own (PYTHONHASHSEED): cards pickled to a
    compression worker must hash as that process hashes them, or its caches would
    miss (or worse, mix)."""
    import pickle
    import subprocess
    import sys

    cards = KeyedCards([("EXTNAME", "Segment10", ""), ("DATASEC", "[1:512,1:2048]", "")])
    program = (
        "import pickle, sys; from cscs.camera.fits_header import KeyedCards; "
        "cards = pickle.loads(sys.stdin.buffer.read()); "
        "print(hash(cards) == hash(KeyedCards(list(cards))), list(cards) == list(cards))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", program], input=pickle.dumps(cards), capture_output=True,
        check=True, env={**os.environ, "PYTHONHASHSEED": "12345"},
    )  # fmt: skip
    assert answer.stdout.split() == [b"True", b"True"]
