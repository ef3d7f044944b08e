"""The event that says an image's header document is ready, and where
(ICD §6 ``largeFileObjectAvailable``), as the header service publishes it and the
archiver reads it.

Pure (no I/O). Anyone on the network can announce anything, so an announcement must
carry an image name, a size and an MD5, each checked where it is parsed; what it points
at is read only as its reader trusts (:mod:`~cscs.camera.headers.reading`).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from cscs.camera.headers.cards import MAX_NAME_LENGTH
from cscs.camera.headers.document import MAX_PRIMARY_CARDS
from cscs.camera.naming import ImageNameText
from cscs.core.schema import EventSpec, Payload

__all__ = [
    "LARGE_FILE_OBJECT_AVAILABLE",
    "MAX_HEADER_DOCUMENT_BYTES",
    "MIME_TYPE",
    "LargeFileObjectAvailable",
    "check_md5",
]

MIME_TYPE = "application/yaml"
#: The most an announcement may say a document holds; a reader's own limit is lower
#: (:data:`~cscs.camera.headers.reading.DEFAULT_MAX_HEADER_BYTES`).
MAX_HEADER_DOCUMENT_BYTES = 64 * 2**20
MAX_URL_LENGTH = 4096

_MD5 = re.compile(r"[0-9a-f]{32}")


def check_md5(text: str) -> str:
    if not _MD5.fullmatch(text):
        raise ValueError(f"{text[:40]!a} is not an MD5 (32 lowercase hex digits)")
    return text


Md5Text = Annotated[str, AfterValidator(check_md5)]


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
    rebuilt: bool = False
    """true: the header was rebuilt after the exposure from the EFD (its HDRSRC is
    'EFD'), replacing any document announced before for this image; an addition to
    ICD §6, so an announcement without it is still read"""


LARGE_FILE_OBJECT_AVAILABLE = EventSpec(
    "largeFileObjectAvailable", LargeFileObjectAvailable, "A header document is ready."
)
