"""What the gateway accepts from the DM side, checked where it is parsed: anyone on the
DM broker can publish anything, and nothing malformed may reach the OCS.

A message is refused (with the reason, which the CSC logs and counts) when it is too
large, not a JSON object, has a field the ICD does not define, a value of the wrong
type, out of range or not a number, names another image, instrument or stage than
its topic, or an image of a day to come (:func:`~cscs.camera.naming.taken_by`, the rule
the gateway applies to every image name it is told of). A redelivered message (QoS 1
is at-least-once) is recognised by its bytes: :func:`message_key` is what the gateway's
queue remembers of each one it took.

Every payload may carry the envelope of ICD §1 (1.2: DM-internal topics too): ``seq``,
the publisher's per-topic counter, and ``sent_tai``. Neither is forwarded (the OCS-side
event has its own); ``seq`` is returned so that the CSC can report a gap in what a DM
service sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cscs.camera.naming import ImageNameText, taken_by
from cscs.core.protocol import decode_json_object
from cscs.core.schema import first_problem
from cscs.core.tai import current_tai
from cscs.telemetry_gateway.interface import ImageQuality, ProcessingStatus

__all__ = ["DmInputError", "DmMessage", "message_key", "parse_dm_message"]


_Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
_Arcsec = Annotated[float | None, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
_Shape = Annotated[float | None, Field(ge=-1.0, le=1.0, allow_inf_nan=False)]
_Adu = Annotated[float | None, Field(ge=-1e7, le=1e7, allow_inf_nan=False)]
#: ICD §1's per-topic counter, from 1; 0 (absent) for a publisher of ICD 1.1's time.
_Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]


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
    seq: _Seq = 0
    sent_tai: float = Field(default=0.0, allow_inf_nan=False)


class _Stage(_Strict):
    """An image's stage on ``{dm}/status/{stage}``."""

    imageName: ImageNameText
    stage: _Name
    status: _Name
    description: str = Field(default="", max_length=1000)
    seq: _Seq = 0
    sent_tai: float = Field(default=0.0, allow_inf_nan=False)


@dataclass(frozen=True)
class DmMessage:
    """A message to forward: the OCS-side event's payload, its source time, and its
    number in its topic (0: not numbered)."""

    payload: ImageQuality | ProcessingStatus
    sent_tai: float
    seq: int = 0


def parse_dm_message(
    topic: str, data: bytes, prefix: str, max_bytes: int, now_tai: float | None = None
) -> DmMessage | None:
    """What ``data`` on ``topic`` says, as the OCS-side event; None for a topic the
    gateway does not forward (a detector's metrics); DmInputError for anything else.
    ``now_tai``: the time an image's date is judged against (default: now)."""
    now = current_tai() if now_tai is None else now_tai
    parts = topic.split("/")
    if len(data) > max_bytes:
        raise DmInputError(f"{len(data)} bytes, more than {max_bytes}")
    if parts[:2] == [prefix, "qc"] and len(parts) == 4:
        summary = _parsed(_QcSummary, data)
        if (summary.instrument, summary.imageName) != (parts[2], parts[3]):
            raise DmInputError(
                f"names {summary.instrument}/{summary.imageName}, not the topic's image"
            )
        _check_date(summary.imageName, now)
        fields = summary.model_dump(exclude={"jobId", "seq", "sent_tai"})
        return DmMessage(ImageQuality(**fields), summary.sent_tai, summary.seq)
    if parts[:2] == [prefix, "status"] and len(parts) == 3:
        stage = _parsed(_Stage, data)
        if stage.stage != parts[2]:
            raise DmInputError(f"names stage {stage.stage!r}, not the topic's")
        _check_date(stage.imageName, now)
        description = "".join(c if c.isprintable() else "?" for c in stage.description[:256])
        status = ProcessingStatus(imageName=stage.imageName, stage=stage.stage,
                                  status=stage.status, description=description)  # fmt: skip
        return DmMessage(status, stage.sent_tai, stage.seq)
    return None


def _check_date(image: str, now: float) -> None:
    if not taken_by(image, now):
        raise DmInputError(f"{image} is dated a day to come: it cannot have been taken yet")


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
