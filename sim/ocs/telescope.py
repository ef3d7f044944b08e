"""The telescope, simulated: pointing, dome and filter for the header service.

``Telescope:{index}`` (index as the camera's: 1 the Auxiliary Telescope with LATISS,
2 and 3 the Simonyi telescope with ComCam or LSSTCam) slews to a target, tracks it
sidereally and changes filters. While ENABLED, its ``mount`` telemetry (10 Hz) carries RA/Dec, the
rotator angle and Alt/Az computed with astropy for Cerro Pachón at the moment of
publication; ``dome`` (1 Hz) follows the mount's azimuth. ``target``, ``filter`` and
``inPosition`` are retained events published on change.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from cscs.camera.observatory import pointing
from cscs.core import generic as g
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.config import ConfigSchema
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.schema import CommandSpec, EventSpec, Payload, TelemetrySpec
from cscs.core.states import State
from cscs.core.tai import current_tai

__all__ = ["TelescopeCsc"]

_CONFIG = Path(__file__).parent / "config"

# ---- Telescope ---------------------------------------------------------------------------


class SlewParams(Payload):
    ra: float = Field(ge=0.0, lt=360.0)
    """deg, ICRS"""
    dec: float = Field(ge=-90.0, le=90.0)
    """deg, ICRS"""
    rotatorAngle: float = Field(default=0.0, ge=-90.0, le=90.0)
    """deg, sky position angle"""
    object: str = ""
    """the target's name (OBJECT)"""
    program: str = ""
    """the observing program (PROGRAM)"""


class FilterParams(Payload):
    filter: str
    disperser: str = ""
    """LATISS only (empty: none)"""


class Mount(Payload):
    ra: float
    dec: float
    rotatorAngle: float
    alt: float
    """deg, computed with astropy for the site and sent_tai"""
    az: float
    """deg, north through east"""
    tracking: bool


class Dome(Payload):
    azimuth: float


class Target(Payload):
    object: str
    program: str
    ra: float
    dec: float
    rotatorAngle: float


class FilterState(Payload):
    filter: str
    disperser: str


class InPosition(Payload):
    inPosition: bool


SLEW = CommandSpec("slew", SlewParams, "Slew to RA/Dec and track; INPROGRESS while slewing.")
SET_FILTER = CommandSpec("setFilter", FilterParams, "Change filter (and disperser).")
MOUNT = TelemetrySpec("mount", Mount, "Pointing, 10 Hz.")
DOME = TelemetrySpec("dome", Dome, "Dome azimuth, 1 Hz.")
TARGET = EventSpec("target", Target, "The current target (retained).", retained=True)
FILTER = EventSpec("filter", FilterState, "The filter in the beam (retained).", retained=True)
IN_POSITION = EventSpec("inPosition", InPosition, "Slewing done (retained).", retained=True)


class TelescopeConfig(ConfigSchema):
    filters: list[str] = ["u", "g", "r", "i", "z", "y"]
    dispersers: list[str] = []
    slew_speed: float = Field(default=3.0, gt=0.0)
    """deg/s on the sky"""
    filter_change_time: float = Field(default=1.0, ge=0.0)
    mount_rate: float = Field(default=10.0, gt=0.0, le=100.0)
    """Hz"""


class TelescopeCsc(BaseCsc[TelescopeConfig]):
    interface = g.GENERIC.extended(
        "Telescope",
        "Simulated telescope (`sim/ocs`): mount, rotator, dome and filter. Index as the "
        "camera's: 1 the Auxiliary Telescope (LATISS; `auxtel` override for its filters "
        "and dispersers), 2 and 3 the Simonyi telescope. Telemetry flows while ENABLED; "
        "Alt/Az are computed with astropy for Cerro Pachón at each sample's `sent_tai`.",
        commands=(SLEW, SET_FILTER),
        events=(TARGET, FILTER, IN_POSITION),
        telemetry=(MOUNT, DOME),
    )
    config_schema = TelescopeConfig
    default_config_dir: ClassVar[Path | None] = _CONFIG / "Telescope"

    def __init__(self, index: int = 1, **kwargs: Any) -> None:
        super().__init__(index, **kwargs)
        # Until the first slew, a circumpolar field: from Cerro Pachón (latitude -30)
        # dec -85 never sets, so Alt/Az and airmass exist whatever the time of day.
        self.target = Target(object="", program="", ra=0.0, dec=-85.0, rotatorAngle=0.0)
        self.filter = FilterState(filter="", disperser="")
        self._lock = asyncio.Lock()

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [bind(SLEW, self.do_slew), bind(SET_FILTER, self.do_set_filter)]

    async def __aenter__(self) -> TelescopeCsc:
        await super().__aenter__()
        await self.publish_event(TARGET, self.target)
        await self.publish_event(FILTER, self.filter)
        await self.publish_event(IN_POSITION, InPosition(inPosition=True))
        self.keep_running(self._track, "mount")
        return self

    async def _track(self) -> None:
        beat = 0
        while True:
            if self.state is not State.ENABLED:  # a disabled mount reports nothing
                await asyncio.sleep(1.0 / self.config.mount_rate)
                continue
            now = current_tai()
            target = self.target
            where = pointing(target.ra, target.dec, now)
            await self.publish_telemetry(
                MOUNT,
                Mount(ra=target.ra, dec=target.dec, rotatorAngle=target.rotatorAngle,
                      alt=where.alt, az=where.az, tracking=where.alt > 0),
            )  # fmt: skip
            rate = self.config.mount_rate
            if beat % max(1, round(rate)) == 0:
                await self.publish_telemetry(DOME, Dome(azimuth=where.az))
            beat += 1
            await asyncio.sleep(1.0 / rate)

    async def do_slew(self, params: SlewParams, context: CommandContext) -> str:
        if self._lock.locked():
            raise ExpectedError("the telescope is busy slewing or changing filter")
        async with self._lock:
            distance = math.hypot(
                (params.ra - self.target.ra) * math.cos(math.radians(params.dec)),
                params.dec - self.target.dec,
            )
            duration = min(distance / self.config.slew_speed, 10.0)
            await self.publish_event(IN_POSITION, InPosition(inPosition=False))
            await context.in_progress(duration + 5.0, f"slewing {distance:.1f} deg")
            await asyncio.sleep(duration)
            self.target = Target(**params.model_dump())
            await self.publish_event(TARGET, self.target)
            await self.publish_event(IN_POSITION, InPosition(inPosition=True))
        return f"tracking {params.object or 'target'} at RA {params.ra:.4f} Dec {params.dec:.4f}"

    async def do_set_filter(self, params: FilterParams, context: CommandContext) -> str:
        config = self.config
        if params.filter not in config.filters:
            raise ExpectedError(f"no filter {params.filter!r}; have {', '.join(config.filters)}")
        if params.disperser and params.disperser not in config.dispersers:
            have = ", ".join(config.dispersers) or "none"
            raise ExpectedError(f"no disperser {params.disperser!r}; have {have}")
        if self._lock.locked():
            raise ExpectedError("the telescope is busy slewing or changing filter")
        async with self._lock:
            await context.in_progress(config.filter_change_time + 5.0, "changing filter")
            await asyncio.sleep(config.filter_change_time)
            self.filter = FilterState(filter=params.filter, disperser=params.disperser)
            await self.publish_event(FILTER, self.filter)
        return f"filter {params.filter}" + (
            f", disperser {params.disperser}" if params.disperser else ""
        )
