"""What catch-up archives, in which order: pure, from the DAQ's listing and the catalog.

Every sensor of every image the DAQ holds complete, that the catalog lacks and that
was read out, oldest image first: the DAQ evicts the oldest first, so they are the
ones that may not wait. An image still being read out is left to its ``endReadout``.

An image whose shutter closed less than ``header_timeout`` ago is one the live path
(its ``endReadout``) may be archiving at this moment: catch-up then waits for its header
as the live path would (:func:`header_wait`). Whichever path takes an ``(image,
sensor)`` first writes it, once, with its header if it comes in time; the other finds
it under way or archived. Without this, catch-up wrote a just-read-out image at once
without its header, and the header arriving moments later had it written again.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

from cscs.daq.reader import ImageInfo

__all__ = ["header_wait", "plan_catch_up"]


def plan_catch_up(
    images: Sequence[ImageInfo], archived: Mapping[str, Collection[str]]
) -> list[tuple[str, str]]:
    """``(image, sensor)`` to archive, in order. ``images``: the DAQ's listing, oldest
    first; ``archived``: for each image, the sensors the catalog has."""
    work: list[tuple[str, str]] = []
    for image in images:
        if not image.complete:
            continue
        skip = set(archived.get(image.name, ())) | set(image.missing_sensors)
        work += [(image.name, sensor) for sensor in image.sensors if sensor not in skip]
    return work


def header_wait(image: ImageInfo, now_tai: float, header_timeout: float) -> float:
    """Seconds catch-up waits for ``image``'s header: ``header_timeout`` if its shutter
    closed (the DAQ's ``dateEnd``, TAI) less than that ago, else none (its header, if
    it ever comes, completes the files later). A missing or absurd ``dateEnd`` counts
    as long past."""
    closed = image.metadata.get("dateEnd")
    if isinstance(closed, bool) or not isinstance(closed, int | float):
        return 0.0
    age = now_tai - float(closed)
    return header_timeout if math.isfinite(age) and 0.0 <= age < header_timeout else 0.0
