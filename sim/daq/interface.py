"""What the simulated camera says and hears on the bus: the camera events of ICD §5
(declared in :mod:`cscs.camera.events`, shared with their consumers) and the
simulator's own additions (the DAQ's address and fill, fault injection)."""

from __future__ import annotations

from pydantic import Field

from cscs.camera.events import (
    DAQ_AVAILABLE,
    END_OF_IMAGE_TELEMETRY,
    END_READOUT,
    FOCAL_PLANE_SUMMARY_INFO,
    LATEST_IMAGE,
    START_INTEGRATION,
    START_READOUT,
)
from cscs.core import generic as g
from cscs.core.schema import (
    ANY_WORKING_STATE,
    CommandSpec,
    NoParams,
    Payload,
    TelemetrySpec,
)
from sim.daq.faults import FaultRule

__all__ = [
    "CLEAR_FAULTS",
    "DAQ_STORE",
    "INJECT_FAULT",
    "INTERFACE",
    "TAKE_IMAGES",
    "DaqStoreStatus",
    "TakeImagesParams",
]


class TakeImagesParams(Payload):
    numImages: int = Field(ge=1, le=10_000)
    expTime: float = Field(ge=0.0, le=3600.0)
    """Exposure time, s (0 for BIAS)."""
    shutter: bool
    """Open the shutter (FLAT, OBJECT) or keep it closed (BIAS, DARK)."""
    imageType: str
    """BIAS, DARK, FLAT, OBJECT or ENGTEST."""
    groupId: str = ""
    keyValueMap: str = ""
    """`key:value` pairs, comma-separated; passed to consumers in `additionalKeys/Values`."""


class DaqStoreStatus(Payload):
    images: int
    usedBytes: int
    capacityBytes: int
    oldestImage: str
    newestImage: str


TAKE_IMAGES = CommandSpec(
    "takeImages",
    TakeImagesParams,
    "Take `numImages` exposures; INPROGRESS until the last image is read out.",
)
INJECT_FAULT = CommandSpec(
    "injectFault",
    FaultRule,
    "Test aid: make the DAQ fail reads (drop, corrupt, slow, evict) or readouts "
    "(missing) of matching images and sensors.",
    allowed_states=ANY_WORKING_STATE,
)
CLEAR_FAULTS = CommandSpec(
    "clearFaults", NoParams, "Remove every injected fault.", allowed_states=ANY_WORKING_STATE
)
DAQ_STORE = TelemetrySpec("daqStore", DaqStoreStatus, "The DAQ buffer's fill, every 5 s.")

INTERFACE = g.GENERIC.extended(
    "Camera",
    "The simulated camera and its DAQ (`sim/daq`; index 1 LATISS, 2 ComCam, 3 LSSTCam).\n\n"
    "Beyond ICD §5: `endReadout` is published only when every sensor's pixels are in the "
    "DAQ buffer; the retained `daqAvailable` says where to read them (ZeroMQ, "
    "`docs/daq-protocol.md`), `daqStore` how full the buffer is, and the retained "
    "`focalPlaneSummaryInfo` which (made-up, fixed) CCD is in each slot. The stars of "
    "`OBJECT` and `ENGTEST` images are a fixed catalog's, seen at the pointing of the "
    "retained `target` of `Telescope:{index}` when the exposure starts, as bright as the "
    "band of its retained `filter` and the airmass make them (`sky.zero_points`, "
    "`sky.extinction`), as wide as `Weather:0`'s seeing; for each new field the catalog is "
    "written as image-qc's reference catalog (`reference_catalog`, default "
    "`$CSCS_STATE_DIR/refcat`). `takeImages` refuses "
    "a BIAS with `expTime` > 0, a DARK with the shutter open, a FLAT or OBJECT with it "
    "closed, and a second sequence while one runs. Image numbers are recorded in "
    "`$CSCS_STATE_DIR/Camera-{index}-sequence.json` (default `~/.local/state/cscs`) "
    "before each name is announced, so a restart never reuses a name. The DAQ binds "
    "`$CSCS_DAQ_BIND` (default `tcp://127.0.0.1:*`, a free port); `daqAvailable` "
    "announces a wildcard bind as `$CSCS_DAQ_ADVERTISE`, or the host's name. `injectFault` and "
    "`clearFaults` are test aids; faults can also be listed in the configuration.",
    commands=(TAKE_IMAGES, INJECT_FAULT, CLEAR_FAULTS),
    events=(
        START_INTEGRATION,
        START_READOUT,
        END_READOUT,
        END_OF_IMAGE_TELEMETRY,
        DAQ_AVAILABLE,
        FOCAL_PLANE_SUMMARY_INFO,
        LATEST_IMAGE,
    ),
    telemetry=(DAQ_STORE,),
)
