"""Fetching a header document from the file its URL names, only where and as much as
its reader trusts (:class:`HeaderTrust`), checked against its announcement.

Anyone on the network can announce any URL: a CSC that read whatever file it was told
would read a device, a FIFO, or any file that is none of its business. So a document is read only
under the trusted directories (symlinks resolved), only from a regular file, never more
than a limit (:func:`~cscs.camera.files.resolve_under`,
:func:`~cscs.camera.files.read_regular_file`), and then parsed as untrusted
(:func:`~cscs.camera.headers.yaml_codec.parse_header_document`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cscs.camera.files import RefusedFileError, read_regular_file, resolve_under
from cscs.camera.headers.announcement import LargeFileObjectAvailable
from cscs.camera.headers.document import HeaderDocument
from cscs.camera.headers.paths import header_directory, header_file, template_directory
from cscs.camera.headers.yaml_codec import parse_header_document

__all__ = ["ANYWHERE", "DEFAULT_MAX_HEADER_BYTES", "HeaderTrust", "read_header_document"]

#: What a reader fetches at most unless configured otherwise (the archiver's
#: ``max_header_bytes``): about a hundred LSSTCam headers.
DEFAULT_MAX_HEADER_BYTES = 4 * 2**20


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
