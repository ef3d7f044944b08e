"""What the gateway accepts from the DM side, checked where it is parsed: anyone on the
DM broker can publish anything, and nothing malformed may reach the OCS.

A message is refused (with the reason, which the CSC logs and counts) when it is too
large, not a JSON object, has a field the ICD does not define, a value of the wrong
type, out of range or not a number, or names another image, instrument or stage than
its topic. A redelivered message (QoS 1 is at-least-once) is recognised by its bytes:
:func:`message_key` is what the gateway's queue remembers of each one it took.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cscs.camera.naming import ImageNameText
from cscs.core.protocol import decode_json_object
from cscs.core.schema import first_problem
from cscs.telemetry_gateway.interface import ImageQuality, ProcessingStatus

__all__ = ["DmInputError", "DmMessage", "message_key", "parse_dm_message"]


_Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
_Arcsec = Annotated[float | None, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
_Shape = Annotated[float | None, Field(ge=-1.0, le=1.0, allow_inf_nan=False)]
_Adu = Annotated[float | None, Field(ge=-1e7, le=1e7, allow_inf_nan=False)]


class DmInputError(ValueError):
    """A DM-side message the gateway will not forward; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _QcSummary(_Strict):
    """An image's summary as OCS Batch publishes it on ``{dm}/qc/{instrument}/{image}``."""

    imageName: ImageNameText
    instrument: _Name
    nSensors: int = Field(ge=0, le=1000)
    psfFwhm: _Arcsec
    psfFwhmMin: _Arcsec
    psfFwhmMax: _Arcsec
    psfE1: _Shape
    psfE2: _Shape
    ellipticity: Annotated[float | None, Field(ge=0.0, le=1.5, allow_inf_nan=False)]
    skyMean: _Adu
    skyRms: Annotated[float | None, Field(ge=0.0, le=1e7, allow_inf_nan=False)]
    zeroPoint: Annotated[float | None, Field(ge=0.0, le=50.0, allow_inf_nan=False)]
    nSources: int = Field(ge=0, le=10_000_000)
    jobId: str = Field(default="", max_length=64)
    sent_tai: float = Field(default=0.0, allow_inf_nan=False)


class _Stage(_Strict):
    """An image's stage on ``{dm}/status/{stage}``."""

    imageName: ImageNameText
    stage: _Name
    status: _Name
    description: str = Field(default="", max_length=1000)
    sent_tai: float = Field(default=0.0, allow_inf_nan=False)


@dataclass(frozen=True)
class DmMessage:
    """A message to forward: the OCS-side event's payload, and its source time."""

    payload: ImageQuality | ProcessingStatus
    sent_tai: float


def parse_dm_message(topic: str, data: bytes, prefix: str, max_bytes: int) -> DmMessage | None:
    """What ``data`` on ``topic`` says, as the OCS-side event; None for a topic the
    gateway does not forward (a detector's metrics); DmInputError for anything else."""
    parts = topic.split("/")
    if len(data) > max_bytes:
        raise DmInputError(f"{len(data)} bytes, more than {max_bytes}")
    if parts[:2] == [prefix, "qc"] and len(parts) == 4:
        summary = _parsed(_QcSummary, data)
        if (summary.instrument, summary.imageName) != (parts[2], parts[3]):
            raise DmInputError(
                f"names {summary.instrument}/{summary.imageName}, not the topic's image"
            )
        fields = summary.model_dump(exclude={"jobId", "sent_tai"})
        return DmMessage(ImageQuality(**fields), summary.sent_tai)
    if parts[:2] == [prefix, "status"] and len(parts) == 3:
        stage = _parsed(_Stage, data)
        if stage.stage != parts[2]:
            raise DmInputError(f"names stage {stage.stage!r}, not the topic's")
        description = "".join(c if c.isprintable() else "?" for c in stage.description[:256])
        status = ProcessingStatus(imageName=stage.imageName, stage=stage.stage,
                                  status=stage.status, description=description)  # fmt: skip
        return DmMessage(status, stage.sent_tai)
    return None


def _parsed(model: type[_QcSummary] | type[_Stage], data: bytes) -> Any:
    try:
        return model.model_validate(decode_json_object(data))
    except ValidationError as exc:
        raise DmInputError(first_problem(exc)) from None
    except ValueError as exc:  # not UTF-8, not JSON, not an object, a 5000-digit number
        raise DmInputError(str(exc)[:200]) from None


def message_key(topic: str, data: bytes) -> bytes:
    """What identifies a DM message: a redelivery is the same bytes on the same topic, a
    new measurement never is (it carries its own ``sent_tai``)."""
    return hashlib.blake2b(topic.encode() + b"\0" + data, digest_size=16).digest()
