"""The header document: every keyword for one image, in a file the archiver fetches.

YAML (``mimeType`` ``application/yaml``), so that a person can read it too::

    imageName: AT_O_20261121_000042
    generator: HeaderService:1
    version: 0.1.0
    primary:                      # primary-HDU keywords, in header order
      - {keyword: RA, value: 150.1, unit: deg, comment: ...}
      - {keyword: AIRTEMP, value: null, comment: ...}     # could not be collected
    detectors:                    # per-detector keywords, by RXX_SXX
      R00_S00: [{keyword: RAFTBAY, value: R00}, ...]
    segments:                     # per-extension geometry, by EXTNAME
      Segment10: [{keyword: EXTNAME, value: Segment10}, {keyword: DATASEC, ...}, ...]
    missing:                      # every keyword left undefined, and why
      - {keyword: AIRTEMP, reason: nothing received from Weather:0 tel/weather}

A missing keyword keeps its place with ``value: null`` (the FITS undefined value) and
is listed under ``missing`` — never invented.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import yaml

from cscs.core.geometry import SEGMENTS, Camera, detector_keywords
from cscs.header_service.collect import Missing, Value

__all__ = ["MIME_TYPE", "HeaderDocument", "render"]

MIME_TYPE = "application/yaml"


@dataclass(frozen=True)
class HeaderDocument:
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


def _card(keyword: str, entry: Value | Missing) -> dict[str, Any]:
    if isinstance(entry, Missing):
        return {"keyword": keyword, "value": None, "comment": "not collected: " + entry.reason}
    card: dict[str, Any] = {"keyword": keyword, "value": _plain(entry.value)}
    if entry.unit:
        card["unit"] = entry.unit
    if entry.comment:
        card["comment"] = entry.comment
    return card


def render(
    image: str,
    generator: str,
    version: str,
    camera: Camera,
    sensors: list[str],
    primary: list[tuple[str, Value | Missing]],
) -> HeaderDocument:
    missing = [(k, e.reason) for k, e in primary if isinstance(e, Missing)]
    document = {
        "imageName": image,
        "generator": generator,
        "version": version,
        "primary": [_card(k, e) for k, e in primary],
        "detectors": {
            name: [
                {"keyword": k, "value": v}
                for k, v in detector_keywords(camera.detector(name)).items()
            ]
            for name in sensors
        },
        "segments": {
            s.name: [{"keyword": k, "value": v} for k, v in s.keywords().items()] for s in SEGMENTS
        },
        "missing": [{"keyword": k, "reason": r} for k, r in missing],
    }
    data = yaml.dump(document, Dumper=_DUMPER, sort_keys=False, allow_unicode=True).encode()
    return HeaderDocument(data, hashlib.md5(data).hexdigest(), tuple(k for k, _ in missing))


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
