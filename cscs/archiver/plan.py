"""What catch-up archives, in which order: pure, from the DAQ's listing and the catalog.

Every sensor of every image the DAQ holds complete, that the catalog lacks and that
was read out, oldest image first: the DAQ evicts the oldest first, so they are the
ones that may not wait. An image still being read out is left to its ``endReadout``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from cscs.daq.reader import ImageInfo

__all__ = ["plan_catch_up"]


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
