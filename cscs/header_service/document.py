"""Rendering an exposure's collected and derived keywords as its header document.

The document's format is declared in :mod:`cscs.camera.headers` (the archiver reads it
with the same declaration); this module only fills it in. What it is filled with comes
off the bus (a target's name, a group id), so a value a FITS header cannot hold (too
long, not printable ASCII, not finite, beyond 64 bits) becomes a missing keyword with
its reason, never a document that cannot be written or a header service in FAULT.

A missing keyword whose value the FITS standard types (``WCSAXES``, ``DATE-OBS``…,
:func:`~cscs.camera.headers.cards.requires_value`) gets no card at all: it is only listed
as missing, and the archiver notes it in a ``COMMENT``. A card with no value would make
every file of the image one the FITS standard refuses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cscs.camera.headers.cards import MAX_TEXT_LENGTH, check_header_value, requires_value
from cscs.camera.headers.document import HeaderCard, HeaderDocument, MissingKeyword
from cscs.camera.headers.yaml_codec import dump_header_document
from cscs.header_service.collect import Missing, Value

__all__ = ["RenderedHeader", "render"]


@dataclass(frozen=True)
class RenderedHeader:
    """A header document as written: its bytes, their MD5, the keywords it lacks."""

    data: bytes
    md5: str
    missing: tuple[str, ...]


def _printable(text: str) -> str:
    """``text`` as a header comment can hold it (a reason may quote what came in)."""
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text)[:MAX_TEXT_LENGTH]


def _usable(entry: Value | Missing) -> Value | Missing:
    """``entry`` with a plain value (numpy scalars made Python ones) a FITS header can
    hold, or missing with the reason why not."""
    if isinstance(entry, Missing):
        return entry
    value = entry.value.item() if hasattr(entry.value, "item") else entry.value
    try:
        check_header_value(value)
    except ValueError as exc:
        return Missing(f"value unusable in a FITS header: {exc}")
    return Value(value, entry.unit, entry.comment)


def _card(keyword: str, entry: Value | Missing) -> HeaderCard:
    if isinstance(entry, Missing):
        comment = _printable("not collected: " + entry.reason)
        return HeaderCard(keyword=keyword, value=None, comment=comment)
    return HeaderCard(keyword=keyword, value=entry.value, unit=entry.unit, comment=entry.comment)


def _cards(entries: list[tuple[str, Value | Missing]]) -> list[HeaderCard]:
    """The cards of ``entries``: a missing keyword the standard types is left out."""
    return [_card(k, e) for k, e in entries if not (isinstance(e, Missing) and requires_value(k))]


def render(
    image: str,
    generator: str,
    version: str,
    primary: list[tuple[str, Value | Missing]],
    detectors: dict[str, list[tuple[str, Value | Missing]]],
) -> RenderedHeader:
    """The document of ``image``: ``primary`` for every file of the image, ``detectors``
    each detector's own. The extensions' keywords are not in it: they follow from the
    camera's geometry alone, and the archiver writes them from there."""
    primary = [(k, _usable(e)) for k, e in primary]
    own = {name: [(k, _usable(e)) for k, e in entries] for name, entries in detectors.items()}
    missing: dict[str, str] = {}  # a detector keyword missing for several: listed once
    for entries in [primary, *own.values()]:
        for keyword, entry in entries:
            if isinstance(entry, Missing):
                missing.setdefault(keyword, _printable(entry.reason))
    document = HeaderDocument(
        imageName=image,
        generator=generator,
        version=version,
        primary=_cards(primary),
        detectors={name: _cards(entries) for name, entries in own.items()},
        segments={},
        missing=[MissingKeyword(keyword=k, reason=r) for k, r in missing.items()],
    )
    data = dump_header_document(document)
    return RenderedHeader(data, hashlib.md5(data).hexdigest(), tuple(missing))
