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
    detectors:                    # per-detector keywords (CCD, sky WCS), by RXX_SXX
      R00_S00: [{keyword: RAFTBAY, value: R00}, ...]
    segments: {}                  # per-extension extras, by EXTNAME; the geometry is
                                  # the archiver's own (cscs/camera/focal_plane.py)
    missing:                      # every keyword left undefined, and why
      - {keyword: AIRTEMP, reason: nothing received from Weather:0 tel/weather}

A missing keyword keeps its place with ``value: null`` (the FITS undefined value) and is
listed under ``missing``, never invented.

Anyone on the network can announce anything, so both the announcement and the document
are bounded here: an announcement must carry an image name, a size and an MD5; a
document is read only from where its reader trusts (:class:`HeaderTrust`), only from a
regular file, never more than a limit, and must be a mapping of this schema whose every
key is a name and every card one a FITS header can take. Whatever fails is a ValueError
or OSError naming what is wrong, never a crash.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from cscs.camera.files import RefusedFileError, read_regular_file, resolve_under
from cscs.camera.geometry import SEGMENT_NAMES
from cscs.camera.naming import MAX_SENSORS, ImageNameText, SensorText
from cscs.core.schema import EventSpec, Payload, first_problem

__all__ = [
    "ANYWHERE",
    "DEFAULT_MAX_HEADER_BYTES",
    "LARGE_FILE_OBJECT_AVAILABLE",
    "MAX_HEADER_DOCUMENT_BYTES",
    "MIME_TYPE",
    "HeaderCard",
    "HeaderDocument",
    "HeaderTrust",
    "LargeFileObjectAvailable",
    "MissingKeyword",
    "PrintableName",
    "PrintableText",
    "check_fits_keyword",
    "check_header_keyword",
    "check_header_value",
    "check_md5",
    "check_printable",
    "default_header_dir",
    "default_header_template",
    "dump_header_document",
    "header_directory",
    "header_file",
    "parse_header_document",
    "read_header_document",
    "template_directory",
]

MIME_TYPE = "application/yaml"

# ---- limits: each far above what a real header needs (LSSTCam's is ~35 kB, ~50 primary
# cards, 3 per detector, 8 per segment), each small enough that a forged one costs little.
#: The most an announcement may say a document holds; a reader's own limit is lower.
MAX_HEADER_DOCUMENT_BYTES = 64 * 2**20
#: What a reader fetches at most unless configured otherwise (the archiver's
#: ``max_header_bytes``): about a hundred LSSTCam headers.
DEFAULT_MAX_HEADER_BYTES = 4 * 2**20
MAX_PRIMARY_CARDS = 1000
MAX_CARDS_PER_HDU = 200  # per detector, per segment
MAX_TEXT_LENGTH = 1024  # a string value, a comment, a reason
MAX_NAME_LENGTH = 128  # a unit, a generator, a version
MAX_URL_LENGTH = 4096
_MAX_YAML_DEPTH = 8  # a document nests 4 deep (itself, detectors, a card list, a card)
_INT64 = 2**63

_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8}")
_MD5 = re.compile(r"[0-9a-f]{32}")
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


def check_md5(text: str) -> str:
    if not _MD5.fullmatch(text):
        raise ValueError(f"{text[:40]!a} is not an MD5 (32 lowercase hex digits)")
    return text


def check_segment_name(name: str) -> str:
    if name not in SEGMENT_NAMES:
        raise ValueError(f"{name[:40]!a} is not a segment's EXTNAME (e.g. Segment10)")
    return name


Md5Text = Annotated[str, AfterValidator(check_md5)]
SegmentText = Annotated[str, AfterValidator(check_segment_name)]
PrintableText = Annotated[str, Field(max_length=MAX_TEXT_LENGTH), AfterValidator(check_printable)]
PrintableName = Annotated[str, Field(max_length=MAX_NAME_LENGTH), AfterValidator(check_printable)]


def check_yaml_shape(data: bytes) -> None:
    """Refuse YAML a header document never is, before it is built: an alias (a few
    bytes that stand for a huge structure), or nesting deeper than a document's. Events
    are read one at a time, so a refusal comes at the first offending one."""
    depth = 0
    for event in yaml.parse(data, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise ValueError("a YAML alias: header documents have none")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_YAML_DEPTH:
                raise ValueError(f"nested deeper than {_MAX_YAML_DEPTH}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class LargeFileObjectAvailable(Payload):
    id: ImageNameText
    """the image name (ICD §5 pattern)"""
    url: str = Field(max_length=MAX_URL_LENGTH)
    """`file://` URL of the document"""
    byteSize: int = Field(ge=0, le=MAX_HEADER_DOCUMENT_BYTES)
    """size of the document, bytes (at most 64 MiB)"""
    checkSum: Md5Text
    """MD5 of the document: 32 lowercase hex digits"""
    mimeType: str = Field(max_length=MAX_NAME_LENGTH)
    generator: str = Field(max_length=MAX_NAME_LENGTH)
    version: str = Field(max_length=MAX_NAME_LENGTH)
    missingKeywords: str = Field(default="", max_length=MAX_PRIMARY_CARDS * 9)
    """comma-separated keywords that could not be collected (empty: header complete); an
    addition to ICD §6, so an announcement without it is still read"""


LARGE_FILE_OBJECT_AVAILABLE = EventSpec(
    "largeFileObjectAvailable", LargeFileObjectAvailable, "A header document is ready."
)


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


@dataclass(frozen=True)
class HeaderTrust:
    """Where a reader fetches header documents from, and how big one may be.

    ``roots``: the directories (with everything under them, symlinks resolved) a
    document may be in. None means anywhere: only for a tool a person runs, which trusts
    whoever announced (the demo's observer); never for a CSC, which would otherwise read
    whatever file anyone on the network names. The size limit and the regular-file
    check hold either way.
    """

    roots: tuple[Path, ...] | None = None
    max_bytes: int = DEFAULT_MAX_HEADER_BYTES

    @classmethod
    def of(
        cls, state_dir: Path, template: str = "", roots: Sequence[str] = (), **limits: int
    ) -> HeaderTrust:
        """What a CSC with ``state_dir`` trusts: ``roots`` or, if none are given, where
        header services write by default (:func:`header_directory`); and always the
        directory of its ``template`` (where it is told headers are)."""
        trusted = [Path(r).expanduser() for r in roots] or [header_directory(state_dir)]
        directory = template_directory(template)
        return cls((*trusted, *([directory] if directory else [])), **limits)


#: No restriction on where: for tools a person runs (see :class:`HeaderTrust`).
ANYWHERE = HeaderTrust()


def header_directory(state_dir: Path) -> Path:
    """Where header services keep their documents by default (one directory each)."""
    return state_dir / "headers"


def default_header_dir(state_dir: Path, index: int) -> Path:
    """Where ``HeaderService:{index}`` writes by default: ``{dayObs}/{image}.yaml`` under
    it. An archiver with the same state directory looks there for what it did not hear
    announced (ICD 1.1 "Missed announcements")."""
    return header_directory(state_dir) / f"HeaderService-{index}"


def default_header_template(state_dir: Path, index: int) -> str:
    """The ``header_url_template`` of :func:`default_header_dir`."""
    return default_header_dir(state_dir, index).as_uri() + "/{day_obs}/{image}.yaml"


def template_directory(template: str) -> Path | None:
    """The directory every URL of a ``{day_obs}``/``{image}`` template is under (its
    fixed part, to the last ``/``); None for no template. ValueError for a template
    that is not a ``file://`` URL with a fixed directory other than ``/``, or that
    names another placeholder."""
    if not template:
        return None
    try:
        fields = {f[1] for f in string.Formatter().parse(template) if f[1] is not None}
    except ValueError as exc:
        raise ValueError(f"{template}: {exc}") from None
    if not fields <= {"day_obs", "image"}:
        raise ValueError(f"{template}: only {{day_obs}} and {{image}} may be used")
    directory = header_file(template.split("{", 1)[0].rsplit("/", 1)[0] + "/")
    if directory == Path(directory.anchor):
        raise ValueError(f"{template}: its fixed directory would be the whole file system")
    return directory


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    def ignore_aliases(self, data: Any) -> bool:
        return True  # readers refuse aliases (check_yaml_shape): never write one


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def dump_header_document(document: HeaderDocument) -> bytes:
    """The document as YAML (empty units and comments left out)."""
    data = document.model_dump(exclude_defaults=True)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True).encode()


def header_file(url: str) -> Path:
    """The local path a header URL names; ValueError unless it is a plain ``file://``
    URL of an absolute path on this host."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise ValueError(f"header URL {url[:200]}: only file:// is supported")
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"header URL {url[:200]}: names another host ({parsed.netloc})")
    if parsed.params or parsed.query or parsed.fragment:
        raise ValueError(f"header URL {url[:200]}: a file URL takes no parameters or query")
    path = Path(url2pathname(parsed.path))
    if not path.is_absolute():
        raise ValueError(f"header URL {url[:200]}: not an absolute path")
    return path


def read_header_document(
    url: str,
    image: str,
    announced: LargeFileObjectAvailable | None,
    trust: HeaderTrust = ANYWHERE,
) -> tuple[HeaderDocument, str]:
    """Fetch ``image``'s header document and its MD5 (blocking: run it in a thread),
    checked against its announcement when there is one (MD5 and size), read only as
    ``trust`` allows. ValueError or OSError naming what is wrong; FileNotFoundError when
    there is none at ``url``."""
    path = header_file(url)
    if announced is not None and announced.byteSize > trust.max_bytes:
        raise ValueError(
            f"header {url[:200]} refused: announced with {announced.byteSize} bytes, "
            f"more than {trust.max_bytes}"
        )
    try:
        if trust.roots is not None:
            path = resolve_under(path, trust.roots)
        data = read_regular_file(path, trust.max_bytes)
    except RefusedFileError as exc:
        raise ValueError(f"header {url[:200]} refused: {exc}") from None
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
    """Read a header document; ValueError naming what is wrong with it.

    The YAML's shape is checked first (:func:`check_yaml_shape`: no aliases, shallow),
    because the C loader builds deep nesting by recursion and crashes the process on a
    few hundred kilobytes of brackets."""
    try:
        check_yaml_shape(data)
        raw: Any = yaml.load(data, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"a header document is a mapping, not {type(raw).__name__}")
    try:
        return HeaderDocument.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(first_problem(exc, "document")) from None
