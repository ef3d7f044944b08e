"""What the Archiver says and hears on the bus (ICD §6), its configuration and its
error codes: declared once, used by the CSC and by anyone reading its events."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from cscs.camera.events import LATEST_IMAGE
from cscs.camera.headers.announcement import MAX_HEADER_DOCUMENT_BYTES
from cscs.camera.headers.paths import default_header_template, template_directory
from cscs.camera.headers.reading import DEFAULT_MAX_HEADER_BYTES, HeaderTrust
from cscs.core import generic as g
from cscs.core.config import ConfigSchema
from cscs.core.schema import CommandSpec, EventSpec, NoParams, Payload, TelemetrySpec
from cscs.core.text import peer_text

__all__ = [
    "ARCHIVER_STATUS",
    "CATCH_UP",
    "ERROR_ARCHIVE_UNWRITABLE",
    "ERROR_CATALOG",
    "ERROR_DAQ_UNREACHABLE",
    "ERROR_EXECUTOR_LOST",
    "IMAGE_ARCHIVED",
    "IMAGE_RETRIEVAL_FAILED",
    "INTERFACE",
    "ArchiverConfig",
    "ArchiverStatus",
    "ImageArchived",
    "ImageRetrievalFailed",
    "retrieval_failed",
]

ERROR_DAQ_UNREACHABLE = 6001
ERROR_ARCHIVE_UNWRITABLE = 6002
ERROR_CATALOG = 6003
ERROR_EXECUTOR_LOST = 6004


class ImageArchived(Payload):
    imageName: str
    sensor: str
    url: str
    byteSize: int
    checkSum: str
    """the file's checksum, lowercase hex (Adler-32: 8 digits)"""
    checkSumAlgorithm: Literal["adler32", "md5"] = "md5"
    """`adler32` (what this archiver sends unless configured otherwise) or `md5`; absent
    (an ICD 1.0 archiver): `md5`"""
    headerComplete: bool
    statusCode: int
    description: str


class ImageRetrievalFailed(Payload):
    imageName: str
    sensor: str
    description: str


_REASONS_LISTED = 10  # per imageRetrievalFailed: the rest are counted
# A reason quotes a peer (a DAQ's error message): each is cut short, so the event stays
# a few kB whatever the peer sent (issue 29).
_REASON_CHARS = 400
_NAME_CHARS = 64


def retrieval_failed(image: str, failures: Mapping[str, str]) -> ImageRetrievalFailed:
    """One ``imageRetrievalFailed`` for all of ``image``'s sensors that could not be read
    (``failures``: sensor → reason, not empty): every sensor named, in order, but only
    the first few reasons given and the rest counted, so that the event stays small
    however many sensors failed at once (a DAQ gone mid-image fails them all)."""
    sensors = sorted(failures)
    reasons = [
        f"{peer_text(sensor, _NAME_CHARS)}: {peer_text(failures[sensor], _REASON_CHARS)}"
        for sensor in sensors[:_REASONS_LISTED]
    ]
    if len(sensors) > _REASONS_LISTED:
        reasons.append(f"and {len(sensors) - _REASONS_LISTED} more")
    return ImageRetrievalFailed(
        imageName=image, sensor=",".join(sensors), description="; ".join(reasons)
    )


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
    header_rebuild_after: float = Field(default=60.0, ge=0.0)
    """Seconds after a file was archived without a complete header before catch-up asks
    `HeaderService:{index}` to rebuild it from the EFD (`rebuildHeaders`; three times at
    most, each wait four times the last); 0: never ask."""
    header_url_template: str = ""
    """Where headers not heard announced (during an outage) can be fetched, e.g.
    `file:///data/headers/{day_obs}/{image}.yaml`; empty: where the header service of
    the same index writes by default under the same state directory
    (`$CSCS_STATE_DIR/headers/HeaderService-{index}/{day_obs}/{image}.yaml`). Its fixed
    directory is trusted: see `header_roots`."""
    header_roots: list[str] = []
    """The only directories (and what is under them, symlinks resolved) header documents
    are read from, whatever an announcement's URL says; empty: `$CSCS_STATE_DIR/headers`,
    where header services write by default. The directory of `header_url_template` is
    trusted as well."""
    max_header_bytes: int = Field(default=DEFAULT_MAX_HEADER_BYTES, ge=1,
                                  le=MAX_HEADER_DOCUMENT_BYTES)  # fmt: skip
    """A header document larger than this is refused (not read): a LSSTCam header is
    ~35 kB."""
    compression: Literal["", "RICE_1"] = ""
    checksum_algorithm: Literal["adler32", "md5"] = "adler32"
    """The file checksum announced and catalogued (ICD 1.1): Adler-32, or MD5 where a
    site's tools need it (at ~0.76 GB/s per core it costs more than the rest of
    archiving)."""
    min_free_bytes: int = Field(default=2**30, ge=0)
    """Refuse to write (FAULT) when the archive would have less free space than this."""
    executor: str = Field(default="local", max_length=200)
    """Where each sensor's file is read and written: `local` (in this process), or on
    Dask workers, one task per image and sensor: `dask-local` (a LocalCluster of
    `dask_workers` processes the CSC starts) or a scheduler's address
    (`tcp://host:8786`). Workers connect to the DAQ themselves and write into
    `archive_root`, which they must all see; the CSC keeps the catalog and the events."""
    dask_workers: int = Field(default=2, ge=1, le=64)
    """Worker processes of `dask-local`."""
    dask_threads_per_worker: int = Field(default=2, ge=1, le=16)
    """Tasks a `dask-local` worker runs at once (one reads while another writes)."""
    scheduler_timeout: float = Field(default=20.0, gt=0.0, le=600.0)
    """Seconds to reach the scheduler (or start `dask-local`) at `start`."""
    executor_fault_after: float = Field(default=60.0, gt=0.0)
    """Seconds the scheduler may stay lost (errorCode 6004 at once) before FAULT; what
    it was doing is left to catch-up, which runs when it is back."""

    def root(self, default: Path) -> Path:
        return Path(self.archive_root).expanduser() if self.archive_root else default

    def header_template(self, state_dir: Path, index: int) -> str:
        """Where this archiver looks for headers it did not hear announced."""
        return self.header_url_template or default_header_template(state_dir, index)

    def header_trust(self, state_dir: Path) -> HeaderTrust:
        """Where header documents may be read from, and how big one may be, for an
        archiver whose state directory is ``state_dir``."""
        return HeaderTrust.of(state_dir, self.header_url_template, self.header_roots,
                              max_bytes=self.max_header_bytes)  # fmt: skip

    @field_validator("executor")
    @classmethod
    def _executor(cls, value: str) -> str:
        if value not in ("local", "dask-local") and not value.startswith(("tcp://", "tls://")):
            raise ValueError("executor is `local`, `dask-local` or an address like tcp://host:8786")
        return value

    @field_validator("header_url_template")
    @classmethod
    def _template(cls, template: str) -> str:
        template_directory(template)  # a file:// URL, {day_obs} and {image} only, not /
        return template

    @field_validator("header_roots")
    @classmethod
    def _roots(cls, roots: list[str]) -> list[str]:
        """Absolute directories, none the whole file system (that would trust anything)."""
        for root in roots:
            path = Path(root).expanduser()
            if not path.is_absolute() or path == Path(path.anchor):
                raise ValueError(f"{root!r}: a header root is an absolute directory, not /")
        return roots
