"""The site's weather station, simulated: ``Weather:0``.

Publishes the weather at 1 Hz while ENABLED: slow deterministic variations around
configured values. The seeing wanders through the night by itself (two slow waves, an
hour and a quarter of an hour long, ``seeing_variation`` of the base at most), so that
the camera's stars, the headers and ``image-qc`` have a changing sky to follow.
``setWeather`` pins the weather at the values it is given until the next ``start``
(tests and the demo use it to know what the header and QC must say).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from cscs.core import generic as g
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.config import ConfigSchema
from cscs.core.csc import BaseCsc
from cscs.core.schema import CommandSpec, Payload, TelemetrySpec
from cscs.core.states import State
from cscs.core.tai import current_tai

__all__ = ["WeatherCsc"]


class WeatherValues(Payload):
    temperature: float
    """deg C"""
    pressure: float
    """hPa"""
    humidity: float
    """percent"""
    windSpeed: float
    """m/s"""
    windDirection: float
    """deg, from north through east"""
    seeing: float = 0.8
    """arcsec FWHM at zenith, as the site's seeing monitor (DIMM) would report it"""


SET_WEATHER = CommandSpec(
    "setWeather", WeatherValues, "Pin the weather at these values until the next start (test aid)."
)
WEATHER = TelemetrySpec("weather", WeatherValues, "Site weather, 1 Hz.")


class WeatherConfig(ConfigSchema):
    base: WeatherValues = WeatherValues(
        temperature=12.0,
        pressure=743.0,
        humidity=25.0,
        windSpeed=4.0,
        windDirection=300.0,
        seeing=0.8,
    )
    variation: float = Field(default=0.0, ge=0.0, le=0.5)
    """fraction of slow sinusoidal wander of temperature, humidity and wind (0: fixed)"""
    seeing_variation: float = Field(default=0.25, ge=0.0, le=0.5)
    """fraction the seeing wanders by through the night (0: fixed)"""
    rate: float = Field(default=1.0, gt=0.0, le=50.0)
    """Hz"""


class WeatherCsc(BaseCsc[WeatherConfig]):
    interface = g.GENERIC.extended(
        "Weather",
        "Simulated site weather station (`sim/ocs`); telemetry flows while ENABLED.",
        commands=(SET_WEATHER,),
        telemetry=(WEATHER,),
    )
    config_schema = WeatherConfig
    default_config_dir: ClassVar[Path | None] = Path(__file__).parent / "config" / "Weather"

    def __init__(self, index: int = 0, **kwargs: Any) -> None:
        super().__init__(index, **kwargs)
        self.base = self.config.base
        self.pinned = False  # by setWeather: publish the base values as they are

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [bind(SET_WEATHER, self.do_set_weather)]

    async def configure(self, config: WeatherConfig) -> None:
        self.base = config.base
        self.pinned = False

    async def __aenter__(self) -> WeatherCsc:
        await super().__aenter__()
        self.keep_running(self._report, "weather")
        return self

    def now(self, tai: float) -> WeatherValues:
        """The weather at ``tai``: the base values, wandering slowly if configured and
        not pinned."""
        base = self.base
        if self.pinned:
            return base
        wander = self.config.variation * math.sin(2 * math.pi * tai / 1800.0)
        # Two waves of incommensurate periods: no two nights look the same.
        seeing_wander = self.config.seeing_variation * (
            0.7 * math.sin(2 * math.pi * tai / 3600.0) + 0.3 * math.sin(2 * math.pi * tai / 887.0)
        )
        return WeatherValues(
            temperature=base.temperature * (1 + wander),
            pressure=base.pressure,
            humidity=min(100.0, base.humidity * (1 + wander)),
            windSpeed=base.windSpeed * (1 + wander),
            windDirection=base.windDirection,
            seeing=base.seeing * (1 + seeing_wander),
        )

    async def _report(self) -> None:
        while True:
            if self.state is State.ENABLED:  # a disabled station is silent
                await self.publish_telemetry(WEATHER, self.now(current_tai()))
            await asyncio.sleep(1.0 / self.config.rate)

    async def do_set_weather(self, params: WeatherValues, context: CommandContext) -> None:
        self.base, self.pinned = params, True
        await self.publish_telemetry(WEATHER, self.now(current_tai()))
