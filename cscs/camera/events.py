"""The camera's events (ICD §5): one declaration for the camera that publishes them and
for every CSC that consumes them (header service, archiver), which validate what they
receive against these models before acting on it (``BaseCsc.follow``). Names are
checked there too (:mod:`cscs.camera.naming`): an image name, a day of observation or a
sensor list that does not match its ICD pattern makes the whole message malformed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import Field, model_validator

from cscs.camera.naming import MAX_SENSORS, DayObsText, ImageNameText, SensorListText
from cscs.core.schema import EventSpec, Payload

__all__ = [
    "CAMERA_EVENTS",
    "DAQ_AVAILABLE",
    "END_OF_IMAGE_TELEMETRY",
    "END_READOUT",
    "FOCAL_PLANE_SUMMARY_INFO",
    "LATEST_IMAGE",
    "START_INTEGRATION",
    "START_READOUT",
    "CcdHardware",
    "DaqAvailable",
    "EndOfImageTelemetry",
    "EndReadout",
    "FocalPlaneSummaryInfo",
    "LatestImage",
    "StartIntegration",
    "StartReadout",
]


class StartIntegration(Payload):
    imageName: ImageNameText
    imageIndex: int
    imagesInSequence: int
    imageSource: str
    imageController: str
    imageDate: DayObsText
    imageNumber: int
    groupId: str
    imageType: str
    exposureTime: float
    timestampAcquisitionStart: float
    timeout: float
    """Seconds after which consumers stop waiting for this image's end events."""
    additionalKeys: str
    additionalValues: str


class StartReadout(Payload):
    imageName: ImageNameText
    timestampStartOfReadout: float


class EndReadout(Payload):
    imageName: ImageNameText
    imageIndex: int
    imagesInSequence: int
    requestedExposureTime: float
    timestampEndOfReadout: float
    sensors: SensorListText
    """Comma-separated RXX_SXX: every sensor read out for this image."""

    @property
    def sensor_names(self) -> list[str]:
        return [s for s in self.sensors.split(",") if s]


class EndOfImageTelemetry(Payload):
    imageName: ImageNameText
    timestampDateObs: float
    timestampDateEnd: float
    exposureTime: float
    darkTime: float
    measuredShutterOpenTime: float


START_INTEGRATION = EventSpec("startIntegration", StartIntegration, "An exposure begins.")
START_READOUT = EventSpec("startReadout", StartReadout, "The shutter closed; readout begins.")
END_READOUT = EventSpec("endReadout", EndReadout, "Every sensor's pixels are in the DAQ buffer.")
END_OF_IMAGE_TELEMETRY = EventSpec(
    "endOfImageTelemetry", EndOfImageTelemetry, "Timing of the finished exposure."
)
CAMERA_EVENTS: dict[str, EventSpec[Payload]] = {
    spec.name: spec
    for spec in (START_INTEGRATION, START_READOUT, END_READOUT, END_OF_IMAGE_TELEMETRY)
}


class DaqAvailable(Payload):
    url: str
    """The DAQ server's ZeroMQ endpoints, comma-separated (docs/daq-protocol.md)."""
    capacityBytes: int

    @property
    def endpoint(self) -> str:
        """The first endpoint: where a reader connects."""
        return self.url.split(",")[0].strip()


DAQ_AVAILABLE = EventSpec(
    "daqAvailable",
    DaqAvailable,
    "Where to read the camera's pixels from (retained; an addition to the ICD).",
    retained=True,
)


class LatestImage(Payload):
    """The last image this CSC finished its part for: retained, so a status board that
    starts now shows it at once (endReadout and the like are not retained)."""

    imageName: ImageNameText
    """e.g. AT_O_20261121_000012"""
    description: str
    """what was done: read out, header written, archived"""


LATEST_IMAGE = EventSpec(
    "latestImage",
    LatestImage,
    "The last image this CSC finished its part for (retained; an addition to the ICD).",
    retained=True,
)


# ---- the detectors' hardware ------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_LIST_LENGTH = MAX_SENSORS * 33


@dataclass(frozen=True)
class CcdHardware:
    """One CCD as the header's ``CCD_MANU``, ``CCD_TYPE``, ``LSST_NUM``, ``CCD_SERN``."""

    manufacturer: str
    type: str
    lsst_name: str
    serial: str


class FocalPlaneSummaryInfo(Payload):
    """Which CCD sits in each slot: comma-separated lists, one item per ``ccdLocation``,
    in the same order (as the real camera's event of this name, whose arrays these are)."""

    ccdLocation: SensorListText
    """RXX_SXX of every CCD"""
    ccdManufacturer: str = Field(max_length=_LIST_LENGTH)
    """e.g. ITL"""
    ccdType: str = Field(max_length=_LIST_LENGTH)
    """e.g. 3800C"""
    ccdLSSTName: str = Field(max_length=_LIST_LENGTH)
    """the project's name of the CCD, e.g. ITL-3800C-068"""
    ccdManSerNum: str = Field(max_length=_LIST_LENGTH)
    """the manufacturer's serial number"""

    @model_validator(mode="after")
    def _one_item_per_ccd(self) -> FocalPlaneSummaryInfo:
        count = len(self.ccdLocation.split(","))
        for name in ("ccdManufacturer", "ccdType", "ccdLSSTName", "ccdManSerNum"):
            items = getattr(self, name).split(",")
            if len(items) != count:
                raise ValueError(f"{name} has {len(items)} items for {count} ccdLocation")
            bad = next((item for item in items if not _TOKEN.fullmatch(item)), None)
            if bad is not None:
                raise ValueError(f"{name}: {bad[:40]!a} is not 1-32 of A-Z a-z 0-9 _ . -")
        return self

    def by_detector(self) -> dict[str, CcdHardware]:
        columns = zip(
            self.ccdLocation.split(","),
            self.ccdManufacturer.split(","),
            self.ccdType.split(","),
            self.ccdLSSTName.split(","),
            self.ccdManSerNum.split(","),
            strict=True,
        )
        return {where: CcdHardware(*hardware) for where, *hardware in columns}


FOCAL_PLANE_SUMMARY_INFO = EventSpec(
    "focalPlaneSummaryInfo",
    FocalPlaneSummaryInfo,
    "Which CCD (manufacturer, type, names) is in each slot (retained; from the real "
    "camera's event of this name).",
    retained=True,
)
