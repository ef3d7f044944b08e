"""What the Archiver says and hears on the bus (ICD §6), its configuration and its
error codes: declared once, used by the CSC and by anyone reading its events."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from cscs.camera.events import LATEST_IMAGE
from cscs.core import generic as g
from cscs.core.config import ConfigSchema
from cscs.core.schema import CommandSpec, EventSpec, NoParams, Payload, TelemetrySpec

__all__ = [
    "ARCHIVER_STATUS",
    "CATCH_UP",
    "ERROR_ARCHIVE_UNWRITABLE",
    "ERROR_CATALOG",
    "ERROR_DAQ_UNREACHABLE",
    "IMAGE_ARCHIVED",
    "IMAGE_RETRIEVAL_FAILED",
    "INTERFACE",
    "ArchiverConfig",
    "ArchiverStatus",
    "ImageArchived",
    "ImageRetrievalFailed",
]

ERROR_DAQ_UNREACHABLE = 6001
ERROR_ARCHIVE_UNWRITABLE = 6002
ERROR_CATALOG = 6003


class ImageArchived(Payload):
    imageName: str
    sensor: str
    url: str
    byteSize: int
    checkSum: str
    """MD5 of the file, hex"""
    headerComplete: bool
    statusCode: int
    description: str


class ImageRetrievalFailed(Payload):
    imageName: str
    sensor: str
    description: str


class ArchiverStatus(Payload):
    queueDepth: int
    """sensors waiting or being archived"""
    bytesPerSecond: float
    """archived over the last interval"""
    freeBytes: int
    imagesArchived: int
    """files archived since start"""


CATCH_UP = CommandSpec(
    "catchUp", NoParams, "Archive whatever the DAQ holds that the catalog lacks, oldest first."
)
IMAGE_ARCHIVED = EventSpec("imageArchived", ImageArchived, "A file is in the archive.")
IMAGE_RETRIEVAL_FAILED = EventSpec(
    "imageRetrievalFailed", ImageRetrievalFailed, "A sensor could not be archived (yet)."
)
ARCHIVER_STATUS = TelemetrySpec("archiverStatus", ArchiverStatus, "Every 5 s.")

INTERFACE = g.GENERIC.extended(
    "Archiver",
    "Archives every image's pixels from the DAQ with its header as FITS, one file per "
    "detector, recorded in the archive catalog (index = camera). File layout as ICD §6. "
    "`imageArchived.statusCode` is 0, or 1 when the file was archived without its "
    "header (completed later). `catchUp` is an addition.",
    commands=(CATCH_UP,),
    events=(IMAGE_ARCHIVED, IMAGE_RETRIEVAL_FAILED, LATEST_IMAGE),
    telemetry=(ARCHIVER_STATUS,),
)


class ArchiverConfig(ConfigSchema):
    archive_root: str = ""
    """Empty: `$CSCS_STATE_DIR/archive`."""
    catalog_url: str = ""
    """SQLAlchemy URL; empty: SQLite at `{archive_root}/catalog.sqlite`."""
    daq_url: str = ""
    """ZeroMQ endpoint of the DAQ; empty: follow `Camera:{index}` `daqAvailable`."""
    header_timeout: float = Field(default=30.0, ge=0.0)
    sensors_in_flight: int = Field(default=4, ge=1, le=64)
    read_attempts: int = Field(default=3, ge=1)
    daq_timeout: float = Field(default=10.0, gt=0.0)
    stall_timeout: float = Field(default=5.0, gt=0.0)
    daq_unreachable_fault_after: float = Field(default=60.0, gt=0.0)
    catchup_interval: float = Field(default=60.0, ge=0.0)
    """Seconds between catch-up passes while ENABLED; 0 for none."""
    header_url_template: str = ""
    """Where headers not heard announced (during an outage) can be fetched, e.g.
    `file:///data/headers/{day_obs}/{image}.yaml`; empty: only announced headers."""
    compression: Literal["", "RICE_1"] = ""
    min_free_bytes: int = Field(default=2**30, ge=0)
    """Refuse to write (FAULT) when the archive would have less free space than this."""

    def root(self, default: Path) -> Path:
        return Path(self.archive_root).expanduser() if self.archive_root else default
