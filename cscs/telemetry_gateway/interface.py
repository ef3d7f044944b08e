"""What TelemetryGateway says and hears (ICD 1.1 §6 "TelemetryGateway" and "DM-internal
topics"), and its configuration: declared once, for the CSC, the operators' tools and
the tests."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cscs.core import generic as g
from cscs.core.config import ConfigSchema
from cscs.core.schema import CommandSpec, EventSpec, Payload
from cscs.telemetry_gateway.health import HealthConfig
from cscs.telemetry_gateway.thresholds import ThresholdRule

__all__ = [
    "ACKNOWLEDGE",
    "ALARM",
    "ALARMS",
    "CONFIG_DIR",
    "IMAGE_QUALITY",
    "INTERFACE",
    "LINK_STATUS",
    "MUTE",
    "PROCESSING_STATUS",
    "UNMUTE",
    "Acknowledge",
    "AlarmEvent",
    "AlarmsNow",
    "GatewayConfig",
    "ImageQuality",
    "LinkStatus",
    "Mute",
    "ProcessingStatus",
    "Unmute",
]

CONFIG_DIR = Path(__file__).parent / "config"
"""The shipped configuration layers; the dashboard colours cells by the same rules."""

_NAME_GLOB = r"^[A-Za-z0-9_.:*?\[\]-]{1,64}$"


class ImageQuality(Payload):
    imageName: str
    instrument: str
    nSensors: int
    """detectors measured"""
    psfFwhm: float | None
    """arcsec, median over detectors"""
    psfFwhmMin: float | None
    psfFwhmMax: float | None
    psfE1: float | None
    psfE2: float | None
    ellipticity: float | None
    skyMean: float | None
    """ADU above bias"""
    skyRms: float | None
    zeroPoint: float | None
    """mag giving 1 ADU/s"""
    nSources: int


class ProcessingStatus(Payload):
    imageName: str
    stage: str
    """e.g. image-qc"""
    status: str
    """e.g. measured, failed"""
    description: str


class AlarmEvent(Payload):
    name: str
    severity: int
    """1 NONE, 2 WARNING, 3 SERIOUS, 4 CRITICAL"""
    reason: str
    maxSeverity: int
    acknowledged: bool
    acknowledgedBy: str
    mutedSeverity: int
    """above NONE: muted up to this severity"""
    mutedBy: str
    timestampSeverityNewest: float
    timestampMaxSeverity: float
    timestampAcknowledged: float
    timestampUnmute: float


class AlarmsNow(Payload):
    alarms: str
    """JSON list of every alarm that is not nominal, each as in `alarm`"""


class LinkStatus(Payload):
    connected: bool
    """the OCS side is reachable"""
    queued: int
    """messages waiting for the OCS side"""
    oldestQueued_tai: float
    """0 when none waits"""


class Acknowledge(Payload):
    name: str = Field(pattern=_NAME_GLOB)
    """an alarm's name, or a glob of names (qc.*)"""
    exact: bool = False
    """true: `name` is one alarm's name, never a glob (`*` is then the alarm named `*`)"""
    severity: int = Field(ge=1, le=4)
    """at or above each alarm's maxSeverity"""
    acknowledgedBy: str = Field(min_length=1, max_length=64)


class Mute(Payload):
    name: str = Field(pattern=_NAME_GLOB)
    """an alarm's name, or a glob of names (qc.*)"""
    exact: bool = False
    """true: `name` is one alarm's name, never a glob"""
    duration: float = Field(gt=0.0, le=7 * 86400.0)
    """s"""
    severity: int = Field(ge=2, le=4)
    """hide up to this severity"""
    mutedBy: str = Field(min_length=1, max_length=64)


class Unmute(Payload):
    name: str = Field(pattern=_NAME_GLOB)
    """an alarm's name, or a glob of names (qc.*)"""
    exact: bool = False
    """true: `name` is one alarm's name, never a glob"""


IMAGE_QUALITY = EventSpec("imageQuality", ImageQuality, "One image's QC summary, once.")
PROCESSING_STATUS = EventSpec("processingStatus", ProcessingStatus, "A DM stage of an image.")
ALARM = EventSpec("alarm", AlarmEvent, "One alarm changed.")
ALARMS = EventSpec(
    "alarms", AlarmsNow, "Every alarm that is not nominal (retained).", retained=True
)
LINK_STATUS = EventSpec(
    "linkStatus", LinkStatus, "The link to the OCS side (retained).", retained=True
)
ACKNOWLEDGE = CommandSpec(
    "acknowledge", Acknowledge, "Acknowledge alarms (a glob of names, or one name with exact)."
)
MUTE = CommandSpec("mute", Mute, "Hide alarms for a time, up to a severity.")
UNMUTE = CommandSpec("unmute", Unmute, "End a mute.")

INTERFACE = g.GENERIC.extended(
    "TelemetryGateway",
    "DM's voice towards the OCS (LDM-148 Telemetry Gateway): QC summaries from "
    "`{dm}/qc/{instrument}/{imageName}` as `imageQuality`, stages from `{dm}/status/{stage}` "
    "as `processingStatus`, and alarms as the observatory's Watcher has them "
    "(docs/telemetry-gateway.md). The DM side is read from `start` to `standby` and queued "
    "on disk; the queue is sent while ENABLED and held while DISABLED.",
    commands=(ACKNOWLEDGE, MUTE, UNMUTE),
    events=(IMAGE_QUALITY, PROCESSING_STATUS, ALARM, ALARMS, LINK_STATUS),
)


class GatewayConfig(ConfigSchema):
    dm_prefix: str = Field(default="dm", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    """Root of the DM-internal topics it reads."""
    max_message_bytes: int = Field(default=65_536, ge=1024, le=16 * 2**20)
    """A DM-side message larger than this is dropped unread."""
    rules: list[ThresholdRule] = [
        ThresholdRule(name="qc.seeing", metric="psfFwhm", warning=1.2, serious=1.5,
                      critical=2.0, hysteresis=0.05),
        ThresholdRule(name="qc.ellipticity", metric="ellipticity", warning=0.1, serious=0.2,
                      hysteresis=0.01, window=3),
    ]  # fmt: skip
    """Threshold rules on imageQuality fields (docs/telemetry-gateway.md)."""
    mute_check_interval: float = Field(default=1.0, gt=0.0, le=60.0)
    """s between looks for mutes that have ended"""
    dm_broker: str = Field(default="", max_length=500)
    """URL of the DM-internal broker (mqtt://host:port); empty: the CSC's own broker"""
    queue_capacity: int = Field(default=100_000, ge=10, le=10_000_000)
    """messages the durable queue towards the OCS side holds; beyond, the oldest
    metrics are dropped (and a SERIOUS alarm says how many)"""
    link_status_interval: float = Field(default=1.0, gt=0.0, le=60.0)
    """s between looks at the link and the queue (linkStatus when they change)"""
    health: HealthConfig = HealthConfig()
    """DM health rules: the CSCs watched, heartbeat and QC timeouts, when it is night"""
