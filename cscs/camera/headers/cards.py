"""What one header card may hold: a FITS keyword, a value a FITS card can take, and
printable text, each bounded.

Pure checks (no I/O), each a ValueError naming what is wrong: the header document's
schema (:mod:`~cscs.camera.headers.document`) is built from them, and the header service
uses them to turn a value that came off the bus into a missing keyword rather than a
document no one can write.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_TEXT_LENGTH",
    "PrintableName",
    "PrintableText",
    "check_fits_keyword",
    "check_header_keyword",
    "check_header_value",
    "check_printable",
    "requires_value",
]

MAX_TEXT_LENGTH = 1024  # a string value, a comment, a reason
MAX_NAME_LENGTH = 128  # a unit, a generator, a version
_INT64 = 2**63

_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8}")
#: Keywords the FITS writer sets itself (structure, checksums, scaling, compression) or
#: that are not ``keyword = value`` cards: a document naming one could make a file that
#: lies about its own layout or pixels, so none may.
_RESERVED = frozenset({
    "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "END", "CHECKSUM",
    "DATASUM", "BZERO", "BSCALE", "BLANK", "THEAP", "TFIELDS", "GROUPS", "COMMENT", "HISTORY",
    "CONTINUE", "HIERARCH", "ZIMAGE", "ZSIMPLE", "ZBITPIX", "ZEXTEND", "ZTENSION", "ZPCOUNT",
    "ZGCOUNT", "ZCMPTYPE", "ZQUANTIZ", "ZDITHER0", "ZBLANK", "ZSCALE", "ZZERO", "ZHECKSUM",
    "ZDATASUM",
})  # fmt: skip
_RESERVED_NUMBERED = re.compile(r"(NAXIS|ZNAXIS|ZTILE|ZNAME|ZVAL|T[A-Z]{3,5})[0-9]+")


#: FITS-standard keywords whose value has a type the standard fixes (FITS 4.0 §4.4.2, §8,
#: §9; the WCS papers): a file with one of them undefined is not FITS (fitsverify: "WCSAXES
#: has a null value; expected an integer"). Such a keyword that could not be collected is
#: left out of the header, listed as missing and noted in a COMMENT, never written
#: without a value. The one list of them: the header service and the archiver both ask
#: :func:`requires_value`.
_VALUE_REQUIRED = frozenset({
    "OBJECT", "TELESCOP", "INSTRUME", "OBSERVER", "ORIGIN", "AUTHOR", "REFERENC", "BUNIT",
    "DATAMAX", "DATAMIN", "DATE", "DATE-OBS", "DATE-BEG", "DATE-END", "DATE-AVG", "DATEREF",
    "MJD-OBS", "MJD-BEG", "MJD-END", "MJD-AVG", "MJDREF", "JDREF", "EPOCH", "RADECSYS",
    "OBSGEO-X", "OBSGEO-Y", "OBSGEO-Z", "OBSGEO-B", "OBSGEO-L", "OBSGEO-H", "TIMESYS",
    "TIMEUNIT", "TREFPOS", "TREFDIR", "PLEPHEM", "TSTART", "TSTOP", "TELAPSE", "XPOSURE",
    "TIMEDEL", "TIMEPIXR", "TIMEOFFS", "JEPOCH", "BEPOCH", "TIMSYER", "TIMRDER",
})  # fmt: skip
#: The WCS keywords, numbered by axis and with an alternate description's letter.
_VALUE_REQUIRED_WCS = re.compile(
    r"(WCSAXES|RADESYS|EQUINOX|LONPOLE|LATPOLE|WCSNAME|RESTFRQ|RESTWAV|SPECSYS|SSYSOBS"
    r"|SSYSSRC|VELOSYS|ZSOURCE|VELANGL"
    r"|(CRPIX|CRVAL|CDELT|CROTA|CTYPE|CUNIT|CNAME|CRDER|CSYER)[0-9]+"
    r"|(CD|PC|PV|PS)[0-9]+_[0-9]+)[A-Z]?"
)


def requires_value(keyword: str) -> bool:
    """Whether the FITS standard types ``keyword``'s value, so that a card of it with no
    value makes a file the standard refuses (such a keyword is left out instead)."""
    return keyword in _VALUE_REQUIRED or _VALUE_REQUIRED_WCS.fullmatch(keyword) is not None


def check_fits_keyword(keyword: str) -> str:
    """``keyword`` if it can be a FITS keyword (1-8 of A-Z 0-9 - _); else ValueError."""
    if not _KEYWORD.fullmatch(keyword):
        raise ValueError(f"{keyword[:40]!a} is not a FITS keyword (1-8 of A-Z 0-9 - _)")
    return keyword


def check_header_keyword(keyword: str) -> str:
    """:func:`check_fits_keyword`, and not one the FITS writer keeps for itself."""
    check_fits_keyword(keyword)
    if keyword in _RESERVED or _RESERVED_NUMBERED.fullmatch(keyword):
        raise ValueError(f"{keyword} is set by the FITS writer, not by a header document")
    return keyword


def check_printable(text: str) -> str:
    """``text`` if a FITS header can hold it: printable ASCII (astropy refuses the rest,
    and the archiver would then fail writing the file, not reading the header)."""
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"{text[:40]!a} is not printable ASCII")
    return text


def check_header_value(value: bool | int | float | str | None) -> bool | int | float | str | None:
    """A value a FITS card can take: a 64-bit integer, a finite float, printable text of
    at most :data:`MAX_TEXT_LENGTH` characters, a boolean or None (undefined)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise ValueError("an integer beyond 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    if isinstance(value, str):
        if len(value) > MAX_TEXT_LENGTH:
            raise ValueError(f"a string of {len(value)} characters, more than {MAX_TEXT_LENGTH}")
        check_printable(value)
    return value


PrintableText = Annotated[str, Field(max_length=MAX_TEXT_LENGTH), AfterValidator(check_printable)]
PrintableName = Annotated[str, Field(max_length=MAX_NAME_LENGTH), AfterValidator(check_printable)]
