"""Rendering an exposure's collected and derived keywords as its header document.

The document's format is declared in :mod:`cscs.camera.headers` (the archiver reads it
with the same declaration); this module only fills it in.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from cscs.camera.geometry import SEGMENTS, Camera, detector_keywords
from cscs.camera.headers import HeaderCard, HeaderDocument, MissingKeyword, dump_header_document
from cscs.header_service.collect import Missing, Value

__all__ = ["RenderedHeader", "render"]


@dataclass(frozen=True)
class RenderedHeader:
    """A header document as written: its bytes, their MD5, the keywords it lacks."""

    data: bytes
    md5: str
    missing: tuple[str, ...]


def _plain(value: Any) -> Any:
    """YAML-safe scalars only (numpy and NaN never reach the file)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _card(keyword: str, entry: Value | Missing) -> HeaderCard:
    if isinstance(entry, Missing):
        return HeaderCard(keyword=keyword, value=None, comment="not collected: " + entry.reason)
    return HeaderCard(
        keyword=keyword, value=_plain(entry.value), unit=entry.unit, comment=entry.comment
    )


def _plain_cards(keywords: dict[str, Any]) -> list[HeaderCard]:
    return [HeaderCard(keyword=k, value=v) for k, v in keywords.items()]


def render(
    image: str,
    generator: str,
    version: str,
    camera: Camera,
    sensors: list[str],
    primary: list[tuple[str, Value | Missing]],
) -> RenderedHeader:
    missing = [(k, e.reason) for k, e in primary if isinstance(e, Missing)]
    document = HeaderDocument(
        imageName=image,
        generator=generator,
        version=version,
        primary=[_card(k, e) for k, e in primary],
        detectors={
            name: _plain_cards(detector_keywords(camera.detector(name))) for name in sensors
        },
        segments={s.name: _plain_cards(s.keywords()) for s in SEGMENTS},
        missing=[MissingKeyword(keyword=k, reason=r) for k, r in missing],
    )
    data = dump_header_document(document)
    return RenderedHeader(data, hashlib.md5(data).hexdigest(), tuple(k for k, _ in missing))
