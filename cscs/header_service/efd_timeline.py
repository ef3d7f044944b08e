"""An exposure's timeline from what the EFD recorded: pure (no I/O).

The EFD keeps every message heard on the bus as an :class:`~cscs.efd.records.EfdRecord`
(fields flattened: a list ``x`` as ``x0``, ``x1``…). To rebuild a header, the records of
the image's own span are turned here into the steps the live service would have taken
(:func:`~cscs.header_service.collect.replay` takes them): the camera's events of the
image, validated with the models the live service parses them with, and every mapped
source's messages, each at its ``sent_tai``. Anyone can publish anything, and the EFD
recorded it all: a record that does not validate is left out (and counted), never
trusted, never a crash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_origin

from pydantic import BaseModel

from cscs.camera.events import (
    END_OF_IMAGE_TELEMETRY,
    END_READOUT,
    FOCAL_PLANE_SUMMARY_INFO,
    START_INTEGRATION,
    START_READOUT,
    CcdHardware,
    EndOfImageTelemetry,
    EndReadout,
    FocalPlaneSummaryInfo,
    StartIntegration,
    StartReadout,
)
from cscs.core.schema import Payload, parse_payload
from cscs.core.topics import Kind
from cscs.efd.records import EfdRecord, Measurement
from cscs.header_service.collect import CameraMoment, SourceKey, Step

__all__ = [
    "IMAGE_EVENTS",
    "ImageEvents",
    "camera_measurement",
    "hardware_of",
    "image_events",
    "source_measurement",
    "source_steps",
    "starts_of",
    "timeline",
    "unflatten",
]

#: The camera's events of one image, in the order the camera publishes them.
IMAGE_EVENTS: tuple[str, ...] = (
    START_INTEGRATION.name,
    START_READOUT.name,
    END_READOUT.name,
    END_OF_IMAGE_TELEMETRY.name,
)
_MODELS: dict[str, type[Payload]] = {
    START_INTEGRATION.name: StartIntegration,
    START_READOUT.name: StartReadout,
    END_READOUT.name: EndReadout,
    END_OF_IMAGE_TELEMETRY.name: EndOfImageTelemetry,
}
#: The moment each camera event is (``endOfImageTelemetry`` is the exposure's end).
_MOMENTS = {
    START_INTEGRATION.name: "start",
    START_READOUT.name: START_READOUT.name,
    END_READOUT.name: END_READOUT.name,
    END_OF_IMAGE_TELEMETRY.name: "end",
}
_LONGEST_LIST = 1000  # items of one flattened list put back together


def camera_measurement(event: str) -> Measurement:
    return Measurement("Camera", Kind.EVENT, event)


def source_measurement(key: SourceKey) -> Measurement:
    kind = Kind.TELEMETRY if key.kind == Kind.TELEMETRY.value else Kind.EVENT
    return Measurement(key.name, kind, key.topic)


def unflatten(fields: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """``fields`` as published: each of ``names`` that the EFD flattened (``x0``,
    ``x1``… and no ``x``) made a list again."""
    data = dict(fields)
    for name in names:
        if name in data or f"{name}0" not in data:
            continue
        items: list[Any] = []
        while f"{name}{len(items)}" in data and len(items) < _LONGEST_LIST:
            items.append(data[f"{name}{len(items)}"])
        data[name] = items
    return data


def _list_fields(model: type[BaseModel]) -> list[str]:
    return [n for n, f in model.model_fields.items() if get_origin(f.annotation) is list]


def _parse(model: type[Payload], record: EfdRecord) -> Any:
    """The record's payload as ``model``; ValueError if it is not one."""
    return parse_payload(model, unflatten(record.fields, _list_fields(model)))


def starts_of(records: Iterable[EfdRecord], code: str) -> dict[str, tuple[float, StartIntegration]]:
    """Each image's first valid ``startIntegration`` of the camera whose images are
    named ``{code}_…`` (a repeat is ignored, as the live service ignores it)."""
    starts: dict[str, tuple[float, StartIntegration]] = {}
    for record in sorted(records, key=lambda r: (r.sent_tai, r.seq)):
        name = record.fields.get("imageName")
        if not isinstance(name, str) or name in starts or not name.startswith(f"{code}_"):
            continue
        try:
            starts[name] = (record.sent_tai, _parse(StartIntegration, record))
        except ValueError:
            continue
    return starts


@dataclass
class ImageEvents:
    """The camera's events of one image found in the EFD, as moments."""

    start: StartIntegration
    moments: list[tuple[float, CameraMoment]]
    ended: bool  # endOfImageTelemetry is among them
    refused: int = 0  # records of the image that did not validate
    seen: set[str] = field(default_factory=set)

    @property
    def last(self) -> float:
        return max(t for t, _ in self.moments)


def image_events(
    start_tai: float,
    start: StartIntegration,
    records: Iterable[EfdRecord],
    detectors: frozenset[str],
) -> ImageEvents:
    """The image's moments: its ``startIntegration`` at ``start_tai``, then the first
    valid one of each later camera event naming it (an ``endReadout`` listing a sensor
    the camera does not have is refused, as live)."""
    found = ImageEvents(start, [(start_tai, CameraMoment("start", start))], ended=False)
    for record in sorted(records, key=lambda r: (r.sent_tai, r.seq)):
        event = record.measurement.name
        if record.fields.get("imageName") != start.imageName or event not in _MODELS:
            continue
        if event == START_INTEGRATION.name or event in found.seen:
            continue
        if record.sent_tai < start_tai:
            continue
        try:
            payload = _parse(_MODELS[event], record)
        except ValueError:
            found.refused += 1
            continue
        if isinstance(payload, EndReadout) and not set(payload.sensor_names) <= detectors:
            found.refused += 1
            continue
        found.seen.add(event)
        found.moments.append((record.sent_tai, CameraMoment(_MOMENTS[event], payload)))
        found.ended = found.ended or event == END_OF_IMAGE_TELEMETRY.name
    return found


def source_steps(key: SourceKey, records: Iterable[EfdRecord], fields: Iterable[str]) -> list[Step]:
    """The messages of one source as steps, each at its ``sent_tai``; ``fields``: those
    the keyword map reads (put back together if the EFD flattened them)."""
    names = list(fields)
    unique = {r.key: r for r in records}.values()
    return [(r.sent_tai, key, unflatten(r.fields, names)) for r in unique]


def timeline(events: ImageEvents, sources: Iterable[Step]) -> list[Step]:
    """Every step in time order; a source's message before a camera moment of the same
    time (it was in force by then)."""
    steps: list[tuple[float, int, int, Step]] = []
    for i, (t, key, data) in enumerate(sources):
        steps.append((t, 0, i, (t, key, data)))
    for i, (t, moment) in enumerate(events.moments):
        steps.append((t, 1, i, (t, moment, {})))
    steps.sort(key=lambda s: s[:3])
    return [s[3] for s in steps]


def hardware_of(
    records: Iterable[EfdRecord], detectors: frozenset[str]
) -> dict[str, CcdHardware] | None:
    """Which CCD is in each slot, from the newest valid ``focalPlaneSummaryInfo`` among
    ``records`` (None if none is); only the camera's own detectors, as live."""
    for record in sorted(records, key=lambda r: (r.sent_tai, r.seq), reverse=True):
        if record.measurement.name != FOCAL_PLANE_SUMMARY_INFO.name:
            continue
        try:
            info = _parse(FocalPlaneSummaryInfo, record)
        except ValueError:
            continue
        return {k: v for k, v in info.by_detector().items() if k in detectors}
    return None
