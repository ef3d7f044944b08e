"""The telescope, simulated: pointing, focus, dome and filter for the header service.

``Telescope:{index}`` (index as the camera's: 1 the Auxiliary Telescope with LATISS,
2 and 3 the Simonyi telescope with ComCam or LSSTCam) slews to a target, tracks it
sidereally and changes filters. While ENABLED, its ``mount`` telemetry (10 Hz) carries
RA/Dec, the rotator angle, Alt/Az computed with astropy for Cerro Pachón at the moment
of publication, and the camera hexapod's focus position; ``dome`` (1 Hz) follows the
mount's azimuth. ``target``, ``filter`` and ``inPosition`` are retained events
published on change.

Each camera's filter wheel is configured (``filter_wheels``, by index) with the real
instruments' filter names and bands, so that headers carry ``FILTER`` as the
observatory's pipelines know it (``SDSSr_65mm``, ``r_03``, ``r_57``); a wheel always
has a filter in the beam (its first slot at start). ``setFilter`` takes a filter's name
or its band. LATISS also has a grating wheel (``gratings``; ``empty_1`` is no grating).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from cscs.camera.observatory import pointings
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
    """a filter's name (e.g. r_03) or its band (r)"""
    grating: str = ""
    """LATISS only: a grating's name (empty: keep the one in the beam)"""


class Mount(Payload):
    ra: float
    dec: float
    rotatorAngle: float
    alt: float
    """deg, computed with astropy for the site and sent_tai"""
    az: float
    """deg, north through east"""
    tracking: bool
    focusZ: float
    """mm, the camera hexapod's focus position"""


class Dome(Payload):
    azimuth: float


class Target(Payload):
    object: str
    program: str
    ra: float
    dec: float
    rotatorAngle: float
    trackingSystem: str = "RADEC"
    """what the mount tracks (TRACKSYS)"""
    rotatorFrame: str = "sky"
    """what rotatorAngle is measured in (ROTCOORD)"""


class FilterState(Payload):
    filter: str
    """the physical filter's name (FILTER)"""
    band: str
    """its band (FILTBAND)"""
    slot: int
    """its place in the wheel (FILTSLOT)"""
    grating: str
    """LATISS only: the grating's name (GRATING); empty elsewhere"""
    gratingSlot: int
    """its place in the grating wheel (GRATSLOT); -1 without one"""


class FilterSpec(Payload):
    """One filter (or grating) of a wheel: its name as the pipelines know it, its band."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    band: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,16}$")


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
    filter_wheels: dict[int, list[FilterSpec]] = {}
    """By index (1 LATISS, 2 ComCam, 3 LSSTCam); slot = place in the list."""
    gratings: list[FilterSpec] = []
    """LATISS's grating wheel (index 1 only); the first is in the beam at start."""
    focus_z: float = 0.0
    """mm, the camera hexapod's focus position"""
    slew_speed: float = Field(default=3.0, gt=0.0)
    """deg/s on the sky"""
    filter_change_time: float = Field(default=1.0, ge=0.0)
    mount_rate: float = Field(default=10.0, gt=0.0, le=100.0)
    """Hz"""
    dome_rate: float = Field(default=1.0, gt=0.0, le=100.0)
    """Hz, at most ``mount_rate`` (each ``dome`` goes with a ``mount``)"""


class TelescopeCsc(BaseCsc[TelescopeConfig]):
    interface = g.GENERIC.extended(
        "Telescope",
        "Simulated telescope (`sim/ocs`): mount, rotator, dome and filter. Index as the "
        "camera's: 1 the Auxiliary Telescope (LATISS, with its grating wheel), 2 and 3 "
        "the Simonyi telescope; each camera's filter wheel by the real filter names "
        "(`filter_wheels`). Telemetry flows while ENABLED; "
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
        self.filter = self._initial_filter()
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
        """Publish ``mount`` at ``mount_rate`` and ``dome`` at ``dome_rate`` while ENABLED.

        Alt/Az for a whole second of publications comes from one vectorised astropy
        transform (one costs ~10 ms, about what ten do at once): at 10 Hz, one transform
        each would keep a tenth of a core busy, which this simulator shares with the
        CSCs it serves. Each value is still Alt/Az at the moment it is published."""
        beat = 0
        while True:
            rate = self.config.mount_rate
            if self.state is not State.ENABLED:  # a disabled mount reports nothing
                await asyncio.sleep(1.0 / rate)
                continue
            target = self.target
            start = current_tai()
            per_second = max(1, round(rate))
            per_dome = max(1, round(rate / self.config.dome_rate))
            times = [start + n / rate for n in range(per_second)]
            for tai, where in zip(times, pointings(target.ra, target.dec, times), strict=True):
                await asyncio.sleep(max(0.0, tai - current_tai()))
                if self.state is not State.ENABLED or self.target != target:
                    break  # disabled, or slewed: what was computed is no longer where it is
                await self.publish_telemetry(
                    MOUNT,
                    Mount(ra=target.ra, dec=target.dec, rotatorAngle=target.rotatorAngle,
                          alt=where.alt, az=where.az, tracking=where.alt > 0,
                          focusZ=self.config.focus_z),
                )  # fmt: skip
                if beat % per_dome == 0:
                    await self.publish_telemetry(DOME, Dome(azimuth=where.az))
                beat += 1
            else:
                await asyncio.sleep(max(0.0, start + per_second / rate - current_tai()))

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

    def _wheel(self) -> list[FilterSpec]:
        return self.config.filter_wheels.get(self.address.index, [])

    def _gratings(self) -> list[FilterSpec]:
        return self.config.gratings if self.address.index == 1 else []

    def _initial_filter(self) -> FilterState:
        wheel, gratings = self._wheel(), self._gratings()
        first = wheel[0] if wheel else FilterSpec(name="none")
        return FilterState(
            filter=first.name, band=first.band, slot=0 if wheel else -1,
            grating=gratings[0].name if gratings else "", gratingSlot=0 if gratings else -1,
        )  # fmt: skip

    async def configure(self, config: TelescopeConfig) -> None:
        """A wheel keeps its filter across a restart unless the configuration changed it."""
        wheel = self._wheel()
        slot = self.filter.slot
        if not 0 <= slot < len(wheel) or wheel[slot].name != self.filter.filter:
            self.filter = self._initial_filter()
            await self.publish_event(FILTER, self.filter)

    async def do_set_filter(self, params: FilterParams, context: CommandContext) -> str:
        wheel, gratings = self._wheel(), self._gratings()
        slot = _find(wheel, params.filter)
        if slot is None:
            have = ", ".join(f"{f.name} ({f.band})" for f in wheel) or "none"
            raise ExpectedError(f"no filter {params.filter!r}; the wheel has {have}")
        grating_slot = self.filter.gratingSlot
        if params.grating:
            found = _find(gratings, params.grating)
            if found is None:
                have = ", ".join(g.name for g in gratings) or "none"
                raise ExpectedError(f"no grating {params.grating!r}; have {have}")
            grating_slot = found
        if self._lock.locked():
            raise ExpectedError("the telescope is busy slewing or changing filter")
        async with self._lock:
            await context.in_progress(self.config.filter_change_time + 5.0, "changing filter")
            await asyncio.sleep(self.config.filter_change_time)
            chosen = wheel[slot]
            self.filter = FilterState(
                filter=chosen.name, band=chosen.band, slot=slot,
                grating=gratings[grating_slot].name if grating_slot >= 0 else "",
                gratingSlot=grating_slot,
            )  # fmt: skip
            await self.publish_event(FILTER, self.filter)
        grating = f", grating {self.filter.grating}" if self.filter.grating else ""
        return f"filter {chosen.name} ({chosen.band}){grating}"


def _find(wheel: list[FilterSpec], wanted: str) -> int | None:
    """The slot of the filter named ``wanted``, or else of the first in band ``wanted``."""
    for slot, spec in enumerate(wheel):
        if spec.name == wanted:
            return slot
    for slot, spec in enumerate(wheel):
        if spec.band == wanted:
            return slot
    return None
