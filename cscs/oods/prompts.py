"""What the OODS takes from the bus, checked where it is read: anyone can publish
anything, and a message is only ever a prompt to look in the catalog, so all that is
kept of one is an image name and sensors of this OODS's camera, checked.

* ``imageArchived`` (Archiver): the image and sensor named;
* ``imageRetrievalFailed`` (Archiver): the image and its sensors not archived (yet);
* ``endReadout`` (Camera): the image and every sensor read out;
* ``{dm}/qc/{instrument}/{imageName}`` (OCS Batch's QC summary of an image, ICD
  DM-internal topics): the image, from the topic (the values are the catalog's).
"""

from __future__ import annotations

from pydantic import Field

from cscs.camera.geometry import Camera
from cscs.camera.naming import MAX_SENSORS, ImageName, check_sensor
from cscs.core.schema import EventSpec, Payload

__all__ = [
    "ARCHIVED",
    "RETRIEVAL_FAILED",
    "Archived",
    "PromptError",
    "RetrievalFailed",
    "image_of",
    "qc_image",
    "sensors_of",
]

# Components never import each other (docs/architecture.md): what the OODS reads of
# the Archiver's events (ICD §6) is declared here, the fields it uses and no more,
# each checked by the functions below.
_TEXT = Field(max_length=4096)


class Archived(Payload):
    """What the OODS reads of ``imageArchived``."""

    imageName: str = _TEXT
    sensor: str = _TEXT


class RetrievalFailed(Payload):
    """What the OODS reads of ``imageRetrievalFailed``."""

    imageName: str = _TEXT
    sensor: str = _TEXT


ARCHIVED = EventSpec("imageArchived", Archived, "A file is in the archive (Archiver).")
RETRIEVAL_FAILED = EventSpec(
    "imageRetrievalFailed", RetrievalFailed, "Sensors not archived (yet) (Archiver)."
)

_NAME_CHARS = 40  # of a bad value, in an error message


class PromptError(ValueError):
    """A message the OODS does not act on; the message says why."""


def image_of(camera: Camera, name: str) -> str:
    """``name`` if it is an image name of ``camera``; PromptError otherwise."""
    try:
        parsed = ImageName.parse(name)
    except ValueError as exc:
        raise PromptError(str(exc)) from None
    if parsed.code != camera.code:
        raise PromptError(f"{name[:_NAME_CHARS]!r} is not an image of {camera.instrument}")
    return name


def sensors_of(camera: Camera, listed: str) -> list[str]:
    """The comma-separated sensors of ``camera`` in ``listed`` (each once); PromptError
    naming the first that is not one."""
    names = [s for s in listed.split(",", MAX_SENSORS + 1) if s]
    if len(names) > MAX_SENSORS:
        raise PromptError(f"more than {MAX_SENSORS} sensors listed")
    for name in names:
        try:
            camera.detector(check_sensor(name))
        except ValueError as exc:
            raise PromptError(str(exc)) from None
    return sorted(set(names))


def qc_image(topic: str, dm_prefix: str, camera: Camera) -> str:
    """The image whose QC summary ``topic`` carries (``{dm}/qc/{instrument}/{image}``),
    if it is one of ``camera``'s; PromptError otherwise."""
    parts = topic.split("/")
    expected = [dm_prefix, "qc", camera.instrument]
    if len(parts) != 4 or parts[:3] != expected:
        raise PromptError(f"not {'/'.join(expected)}/IMAGE: {topic[:120]!r}")
    return image_of(camera, parts[3])
