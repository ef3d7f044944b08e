"""The header service's command ``rebuildHeaders``: rebuild a range of one camera's
headers from the EFD (an addition to ICD §6).

Declared here, beside the announcement, because two components meet on it: the header
service runs it, and the archiver sends it for files still without a complete header
(neither may import the other). Pure (no I/O).
"""

from __future__ import annotations

from pydantic import Field

from cscs.camera.naming import ImageName, ImageNameText
from cscs.core.schema import CommandSpec, Payload

__all__ = ["MAX_REBUILD_IMAGES", "REBUILD_HEADERS", "RebuildHeaders", "image_range"]

#: Images one command may name: a night of LATISS is ~600; more is a mistake.
MAX_REBUILD_IMAGES = 1000


class RebuildHeaders(Payload):
    firstImage: ImageNameText
    """the first image whose header is rebuilt, e.g. CC_O_20261121_000012"""
    lastImage: str = Field(default="", max_length=64)
    """the last one (same camera, same dayObs, at most 1000 images); empty: firstImage only"""


def image_range(params: RebuildHeaders, code: str) -> list[str]:
    """The images ``params`` names, of the camera whose images are ``{code}_…``;
    ValueError naming what is wrong."""
    first = ImageName.parse(params.firstImage)
    last = ImageName.parse(params.lastImage) if params.lastImage else first
    for which, name in (("firstImage", first), ("lastImage", last)):
        if name.code != code:
            raise ValueError(f"{which} {name} is not an image of this camera ({code}_…)")
    if (last.controller, last.day_obs) != (first.controller, first.day_obs):
        raise ValueError(f"lastImage {last} is not of the same dayObs as {first}")
    count = last.seq_num - first.seq_num + 1
    if count < 1:
        raise ValueError(f"lastImage {last} comes before firstImage {first}")
    if count > MAX_REBUILD_IMAGES:
        raise ValueError(f"{count} images asked; at most {MAX_REBUILD_IMAGES} at once")
    return [
        str(ImageName(first.code, first.controller, first.day_obs, n))
        for n in range(first.seq_num, last.seq_num + 1)
    ]


REBUILD_HEADERS = CommandSpec(
    "rebuildHeaders",
    RebuildHeaders,
    "Rebuild the headers of a range of this camera's images from the EFD: each image "
    "without a header document, or whose document lacks keywords the EFD can supply, "
    "gets a new one (HDRSRC = 'EFD'), announced with largeFileObjectAvailable.rebuilt. "
    "The result says how many were rebuilt, already complete, unchanged, not in the EFD.",
    timeout=600.0,
)
