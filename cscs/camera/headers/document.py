"""The header document's schema: an image's primary, per-detector and per-segment cards,
and the keywords that could not be collected (the format is shown in
:mod:`cscs.camera.headers`).

Pure (no I/O): a document is validated here whoever built it, the header service from
what it collected or the archiver from YAML it read (:mod:`~cscs.camera.headers.yaml_codec`).

Limits: each far above what a real header needs (LSSTCam's is ~35 kB, ~50 primary cards,
3 per detector, 8 per segment), each small enough that a forged one costs little.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from cscs.camera.geometry import SEGMENT_NAMES
from cscs.camera.headers.cards import (
    PrintableName,
    PrintableText,
    check_fits_keyword,
    check_header_keyword,
    check_header_value,
)
from cscs.camera.naming import MAX_SENSORS, ImageNameText, SensorText

__all__ = [
    "MAX_CARDS_PER_HDU",
    "MAX_PRIMARY_CARDS",
    "HeaderCard",
    "HeaderDocument",
    "MissingKeyword",
]

MAX_PRIMARY_CARDS = 1000
MAX_CARDS_PER_HDU = 200  # per detector, per segment


def check_segment_name(name: str) -> str:
    if name not in SEGMENT_NAMES:
        raise ValueError(f"{name[:40]!a} is not a segment's EXTNAME (e.g. Segment10)")
    return name


SegmentText = Annotated[str, AfterValidator(check_segment_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class HeaderCard(_Strict):
    keyword: Annotated[str, AfterValidator(check_header_keyword)]
    value: Annotated[bool | int | float | str | None, AfterValidator(check_header_value)]
    """None: the FITS undefined value (a keyword that could not be collected)"""
    unit: PrintableName = ""
    comment: PrintableText = ""


class MissingKeyword(_Strict):
    keyword: Annotated[str, AfterValidator(check_fits_keyword)]
    reason: PrintableText


Cards = Annotated[list[HeaderCard], Field(max_length=MAX_CARDS_PER_HDU)]


class HeaderDocument(_Strict):
    imageName: ImageNameText
    generator: PrintableName
    version: PrintableName
    primary: Annotated[list[HeaderCard], Field(max_length=MAX_PRIMARY_CARDS)]
    detectors: Annotated[dict[SensorText, Cards], Field(max_length=MAX_SENSORS)]
    segments: dict[SegmentText, Cards]  # the names allow only the 16 segments
    missing: Annotated[list[MissingKeyword], Field(max_length=MAX_PRIMARY_CARDS)]

    @model_validator(mode="after")
    def _one_header_each(self) -> HeaderDocument:
        """Each HDU's header names a keyword once (a FITS reader would take either), and
        each segment's ``EXTNAME`` is its own: a document cannot relabel pixels."""
        _unique(self.primary, "primary")
        for sensor, cards in self.detectors.items():
            _unique(self.primary + cards, f"primary and detectors.{sensor}")
        for segment, cards in self.segments.items():
            _unique(cards, f"segments.{segment}")
            names = [c.value for c in cards if c.keyword == "EXTNAME"]
            if names != [segment]:
                raise ValueError(f"segments.{segment}: EXTNAME must be {segment}, not {names}")
        return self


def _unique(cards: list[HeaderCard], where: str) -> None:
    seen: set[str] = set()
    for card in cards:
        if card.keyword in seen:
            raise ValueError(f"{where}: keyword {card.keyword} appears twice")
        seen.add(card.keyword)
