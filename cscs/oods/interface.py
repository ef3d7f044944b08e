"""What the OODS says on the bus (its ``imageInOODS`` event, an ICD addition, and its
``oodsStatus`` telemetry), its configuration and its error codes: declared once, for
the CSC, the operators' tools, OCS Batch (which starts its automatic QC on
``imageInOODS``) and the tests."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from cscs.camera.naming import ImageNameText
from cscs.core import generic as g
from cscs.core.config import ConfigSchema
from cscs.core.schema import EventSpec, Payload, TelemetrySpec

__all__ = [
    "CONFIG_DIR",
    "ERROR_CATALOG_UNAVAILABLE",
    "ERROR_CONSDB_UNAVAILABLE",
    "ERROR_REPOSITORY_UNAVAILABLE",
    "IMAGE_IN_OODS",
    "INTERFACE",
    "OODS_STATUS",
    "STATUS_FILES_REFUSED",
    "STATUS_REGISTERED",
    "ImageInOods",
    "OodsConfig",
    "OodsStatus",
]

CONFIG_DIR = Path(__file__).parent / "config"

#: The repository (its registry) failed: registrations wait and are retried. Said
#: (``errorCode``) when it goes down; the CSC stays ENABLED and retries.
ERROR_REPOSITORY_UNAVAILABLE = 9001
#: ConsDB failed: its rows wait and are retried (the raws are registered regardless).
ERROR_CONSDB_UNAVAILABLE = 9002
#: The archive catalog, the truth of what is archived, cannot be read: nothing is
#: registered until it answers again.
ERROR_CATALOG_UNAVAILABLE = 9003

#: ``imageInOODS.statusCode``: every file the catalog holds for the image is registered.
STATUS_REGISTERED = 0
#: Some of the image's files were refused by the repository (or are not in the
#: archive): ``description`` names each with the reason; they are retried, and a later
#: ``imageInOODS`` says when they are in.
STATUS_FILES_REFUSED = 1


class ImageInOods(Payload):
    imageName: ImageNameText
    instrument: str = Field(max_length=32)
    """the instrument's name in DM (the Butler's): `LATISS`, `LSSTComCam`, `LSSTCam`"""
    exposureId: int
    """the Butler's exposure id: day_obs * 100000 + seq_num"""
    sensors: str = Field(max_length=2000)
    """the image's files now in the repository: their sensors, comma-separated"""
    statusCode: int
    """0: every file the catalog holds for the image is registered; 1: some were
    refused (named in `description`) and are retried"""
    description: str = Field(max_length=4000)
    """what was registered, or which files were refused and why"""


class OodsStatus(Payload):
    queueDepth: int
    """images waiting to be registered (heard, or found by reconciliation)"""
    registered: int
    """files registered (or registered again with a completed header) since start"""
    refusedPending: int
    """files the repository refused, waiting for their next attempt"""
    consDbPending: int
    """images whose ConsDB rows (header or quick-look) wait for another attempt"""
    repositoryUp: bool
    """the last attempt to register reached the repository"""
    lastError: str
    """the last failure (repository, ConsDB, catalog), empty when none since start"""


IMAGE_IN_OODS = EventSpec(
    "imageInOODS",
    ImageInOods,
    "An image's files are in the Butler repository (queryable; `butler.get` works): "
    "once they are all registered, and again whenever one more is, or one is "
    "registered again (its header completed).",
)
OODS_STATUS = TelemetrySpec("oodsStatus", OodsStatus, "Every 5 s.")

INTERFACE = g.GENERIC.extended(
    "OODS",
    "Registers every file the Archiver of the same index archives in the archive's "
    "Butler repository, in place, and its header in ConsDB; says `imageInOODS` per "
    "image (index = camera, as the Archiver's). The archive catalog is the truth: an "
    "`imageArchived` is only a prompt to read it. Quick-look QC from OCS Batch "
    "(DM-internal QC topics) goes to ConsDB too. An addition to the ICD (docs/oods.md).",
    events=(IMAGE_IN_OODS,),
    telemetry=(OODS_STATUS,),
)


class OodsConfig(ConfigSchema):
    archive_root: str = ""
    """Empty: `$CSCS_STATE_DIR/archive` (the Archiver's default): the Butler
    repository's root too."""
    catalog_url: str = ""
    """SQLAlchemy URL of the archive catalog; empty: SQLite at
    `{archive_root}/catalog.sqlite`, as the Archiver's."""
    registry_url: str = ""
    """The Butler registry; empty: SQLite inside the archive; `postgresql://…`."""
    consdb_url: str = ""
    """ConsDB; empty: SQLite under the archive; `postgresql://…`."""
    batch_delay: float = Field(default=0.2, ge=0.0, le=60.0)
    """s after the first `imageArchived` of an image whose sensors are not known (its
    `endReadout` not heard) during which more of its files are waited for, to be
    registered together; an image read out is registered once all its files are in"""
    settle_delay: float = Field(default=10.0, gt=0.0, le=3600.0)
    """s without news of an image whose files are not all known to be in (its
    `endReadout` was not heard, or a sensor is neither archived nor said failed) after
    which `imageInOODS` says what is registered"""
    retry_initial: float = Field(default=5.0, gt=0.0, le=3600.0)
    """s before the first retry of a refused file or of a failed repository, ConsDB or
    catalog; doubling from there"""
    retry_max: float = Field(default=300.0, gt=0.0, le=86400.0)
    """s between retries, at most"""
    max_images_held: int = Field(default=10_000, ge=10, le=1_000_000)
    """images held in memory (waiting, refused, retried); beyond, the oldest are left
    to the reconciliation at the next `start`/`enable` (logged)"""
    reconcile_page: int = Field(default=500, ge=1, le=100_000)
    """catalog files compared with the repository at once while reconciling"""
    reconnect_look_back: float = Field(default=172_800.0, ge=0.0, le=3.2e9)
    """s of exposures (by start) whose files are compared with the repository after a
    reconnection to the broker (at `enable`, every file is); 0: every file"""
    dm_prefix: str = Field(default="dm", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    """Root of the DM-internal topics (`{dm}/qc/{instrument}/{imageName}`: OCS Batch's
    QC summary of an image)."""
    dm_broker: str = Field(default="", max_length=500)
    """URL of the DM-internal broker (mqtt://host:port); empty: the CSC's own broker"""

    def root(self, default: Path) -> Path:
        return Path(self.archive_root).expanduser() if self.archive_root else default

    @model_validator(mode="after")
    def _retries(self) -> OodsConfig:
        if self.retry_max < self.retry_initial:
            raise ValueError(f"retry_max ({self.retry_max:g} s) is below retry_initial "
                             f"({self.retry_initial:g} s)")  # fmt: skip
        return self
