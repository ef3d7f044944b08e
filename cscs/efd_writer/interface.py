"""What EfdWriter says (its ``efdWriterStatus``) and its configuration: declared once,
for the CSC, the operators' tools and the tests."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cscs.core import generic as g
from cscs.core.config import ConfigSchema
from cscs.core.schema import EventSpec, Payload

__all__ = [
    "CONFIG_DIR",
    "DM_CSC",
    "EFD_WRITER_STATUS",
    "ERROR_SPOOL_UNWRITABLE",
    "INTERFACE",
    "EfdWriterConfig",
    "EfdWriterStatus",
]

CONFIG_DIR = Path(__file__).parent / "config"

#: The spool cannot be written while the store is down: nothing heard can be kept.
ERROR_SPOOL_UNWRITABLE = 8001

#: The CSC name under which the DM-internal topics (``{dm}/qc/...``, ``{dm}/status/...``)
#: are recorded: ``lsst.sal.DM.logevent_imageQuality`` and so on (docs/efd.md).
DM_CSC = "DM"


class EfdWriterStatus(Payload):
    received: int
    """messages heard and recorded (kept) since the writer started"""
    written: int
    """records written to the store (spooled ones counted when replayed)"""
    spooled: int
    """records written to the spool since the writer started"""
    spoolBytes: int
    """bytes waiting in the spool now"""
    refused: int
    """messages not recorded (unreadable, not a topic of the ICD, too large)"""
    storeRefused: int = 0
    """records the store refused for good, set aside in the spool's `refused/` (bounded)"""
    storeUrl: str
    """where the EFD is (no secrets)"""
    storeUp: bool
    """the last write to the store succeeded"""
    lastError: str
    """the store's last error, empty when none since it was last up"""


EFD_WRITER_STATUS = EventSpec(
    "efdWriterStatus",
    EfdWriterStatus,
    "What the writer has recorded, spooled and written, and whether the store answers "
    "(retained; every `status_interval` s and on a change of the store's health).",
    retained=True,
)

INTERFACE = g.GENERIC.extended(
    "EfdWriter",
    "Records every event, telemetry sample, command and ack on the bus, and the "
    "DM-internal topics, in the EFD (docs/efd.md): from `start` to `standby`, on a "
    "session the broker keeps, each QoS 1 message acknowledged only once it is in the "
    "store or in the durable spool under the state directory.",
    events=(EFD_WRITER_STATUS,),
)


class EfdWriterConfig(ConfigSchema):
    dm_prefix: str = Field(default="dm", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    """Root of the DM-internal topics recorded (as CSC `DM`)."""
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    """records written to the store at once, at most"""
    batch_interval: float = Field(default=0.5, gt=0.0, le=60.0)
    """s a batch waits to fill before it is written anyway"""
    queue_capacity: int = Field(default=20_000, ge=10, le=10_000_000)
    """records held in memory for the store; beyond, the queue goes to the spool"""
    queue_bytes: int = Field(default=64 * 2**20, ge=65_536, le=4 * 2**30)
    """payload bytes held in memory for the store; beyond, the queue goes to the spool"""
    max_message_bytes: int = Field(default=1_048_576, ge=1024, le=8 * 2**20)
    """a larger message is not recorded (logged, counted as refused)"""
    spool_segment_bytes: int = Field(default=4 * 2**20, ge=4096, le=256 * 2**20)
    """size of one spool file, at most (a spill is split): what one replay step reads"""
    status_interval: float = Field(default=10.0, gt=0.0, le=3600.0)
    """s between efdWriterStatus events (also sent when the store goes down or up)"""
    retry_max: float = Field(default=30.0, gt=0.0, le=600.0)
    """s between attempts to reach a store that is down, at most (back-off)"""
