"""An image's header: the document the header service writes and the archiver reads, and
the event that announces it (ICD §6 ``largeFileObjectAvailable``).

Declared here, once, because two components meet on it and neither may import the
other. The document is YAML, so that a person can read it too::

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

A missing keyword keeps its place with ``value: null`` (the FITS undefined value) and is
listed under ``missing``, never invented.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from cscs.core.schema import EventSpec, Payload, first_problem

__all__ = [
    "LARGE_FILE_OBJECT_AVAILABLE",
    "MIME_TYPE",
    "HeaderCard",
    "HeaderDocument",
    "LargeFileObjectAvailable",
    "MissingKeyword",
    "check_fits_keyword",
    "dump_header_document",
    "parse_header_document",
    "read_header_document",
]

MIME_TYPE = "application/yaml"
_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8}")


class LargeFileObjectAvailable(Payload):
    id: str
    """the image name"""
    url: str
    byteSize: int
    checkSum: str
    """MD5 of the document, hex"""
    mimeType: str
    generator: str
    version: str
    missingKeywords: str = ""
    """comma-separated keywords that could not be collected (empty: header complete); an
    addition to ICD §6, so an announcement without it is still read"""


LARGE_FILE_OBJECT_AVAILABLE = EventSpec(
    "largeFileObjectAvailable", LargeFileObjectAvailable, "A header document is ready."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def check_fits_keyword(keyword: str) -> str:
    """``keyword`` if it can be a FITS keyword (1-8 of A-Z 0-9 - _); else ValueError."""
    if not _KEYWORD.fullmatch(keyword):
        raise ValueError(f"{keyword!r} is not a FITS keyword (1-8 of A-Z 0-9 - _)")
    return keyword


class HeaderCard(_Strict):
    keyword: Annotated[str, AfterValidator(check_fits_keyword)]
    value: bool | int | float | str | None
    """None: the FITS undefined value (a keyword that could not be collected)"""
    unit: str = ""
    comment: str = ""


class MissingKeyword(_Strict):
    keyword: str
    reason: str


class HeaderDocument(_Strict):
    imageName: str
    generator: str
    version: str
    primary: list[HeaderCard]
    detectors: dict[str, list[HeaderCard]]
    segments: dict[str, list[HeaderCard]]
    missing: list[MissingKeyword]


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def dump_header_document(document: HeaderDocument) -> bytes:
    """The document as YAML (empty units and comments left out)."""
    data = document.model_dump(exclude_defaults=True)
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True).encode()


def read_header_document(
    url: str, image: str, announced: LargeFileObjectAvailable | None
) -> tuple[HeaderDocument, str]:
    """Fetch ``image``'s header document and its MD5 (blocking: run it in a thread),
    checked against its announcement when there is one (MD5 and size). ValueError or
    OSError naming what is wrong; FileNotFoundError when there is none at ``url``."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise ValueError(f"header URL {url}: only file:// is supported")
    data = Path(parsed.path).read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    if announced is not None and (md5, len(data)) != (announced.checkSum, announced.byteSize):
        raise ValueError(
            f"header {url} does not match its announcement: MD5 {md5} and {len(data)} bytes, "
            f"announced {announced.checkSum} and {announced.byteSize}"
        )
    try:
        document = parse_header_document(data)
    except ValueError as exc:
        raise ValueError(f"header {url} is not a header document: {exc}") from None
    if document.imageName != image:
        raise ValueError(f"header {url} is for {document.imageName}, not {image}")
    return document, md5


def parse_header_document(data: bytes) -> HeaderDocument:
    """Read a header document; ValueError naming what is wrong with it."""
    try:
        raw: Any = yaml.load(data, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"a header document is a mapping, not {type(raw).__name__}")
    try:
        return HeaderDocument.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(first_problem(exc, "document")) from None
