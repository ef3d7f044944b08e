"""The simulated camera's configuration, and the checks a real camera makes before it
exposes: pure, so every refusal is tested without a bus."""

from __future__ import annotations

from pydantic import Field

from cscs.core.config import ConfigSchema
from cscs.core.errors import ExpectedError
from sim.daq.faults import FaultRule
from sim.daq.interface import TakeImagesParams
from sim.daq.pixels import IMAGE_TYPES, ElectronicsModel, SkyModel

__all__ = ["CameraConfig", "check_exposure", "parse_key_value_map"]


class CameraConfig(ConfigSchema):
    readout_time: float = Field(default=2.0, ge=0.0)
    store_bytes: int = Field(default=4 * 2**30, gt=0)
    """Size of the DAQ buffer; the oldest images are evicted beyond it."""
    sensors: list[str] = []
    """Sensors to read out; empty (and no `rafts`) for every sensor of the camera."""
    rafts: list[str] = []
    """Rafts to read out, every sensor of each (e.g. `[R21, R22, R23]`), besides
    `sensors`: how a machine smaller than the observatory's reads part of LSSTCam."""
    seed: int = 1
    electronics: ElectronicsModel = ElectronicsModel()
    sky: SkyModel = SkyModel()
    faults: list[FaultRule] = []
    synthesis_threads: int = Field(default=2, ge=1, le=64)
    reference_catalog: str = Field(default="", max_length=4096)
    """Where the sky's catalog is written for each field observed (the reference
    image-qc's zero points are measured against); empty: `$CSCS_STATE_DIR/refcat`;
    `none`: not written."""


def parse_key_value_map(text: str) -> tuple[str, str]:
    """``"a:1,b:2"`` → ``("a:b", "1:2")`` (ICD §5), or an error naming the bad item."""
    if not text.strip():
        return "", ""
    keys, values = [], []
    for item in text.split(","):
        key, sep, value = item.strip().partition(":")
        if not sep or not key or ":" in value:
            raise ExpectedError(
                f"keyValueMap item {item.strip()!r} must be key:value (no ':' or ',' inside)"
            )
        keys.append(key.strip())
        values.append(value.strip())
    return ":".join(keys), ":".join(values)


_TYPES_NEED_SHUTTER = {"FLAT": True, "OBJECT": True, "BIAS": False, "DARK": False}


def check_exposure(params: TakeImagesParams) -> None:
    """Refuse exposures a real camera would refuse, saying what to change."""
    if params.imageType not in IMAGE_TYPES:
        raise ExpectedError(
            f"imageType {params.imageType!r} is not one of {', '.join(IMAGE_TYPES)}"
        )
    if params.imageType == "BIAS" and params.expTime != 0:
        raise ExpectedError(f"a BIAS has expTime 0, not {params.expTime:g}")
    wanted = _TYPES_NEED_SHUTTER.get(params.imageType)
    if wanted is not None and params.shutter != wanted:
        state = "open" if wanted else "closed"
        raise ExpectedError(f"a {params.imageType} needs the shutter {state} (shutter={wanted})")
