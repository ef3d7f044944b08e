"""The telescope and weather simulators: what the header service is tested against."""

from __future__ import annotations

import astropy.units as u
import pytest
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time

from cscs.core.protocol import AckCode
from cscs.core.settings import Settings
from cscs.core.tai import current_tai
from cscs.core.testing import check_standard_state_transitions, make_csc
from cscs.core.topics import Kind
from cscs.core.transport import Connector
from sim.ocs.telescope import TelescopeCsc
from sim.ocs.weather import WeatherCsc

SITE = EarthLocation.from_geodetic(-70.749417 * u.deg, -30.244639 * u.deg, 2663 * u.m)
SLEW = {"ra": 10.0, "dec": -40.0, "rotatorAngle": 5.0, "object": "X", "program": "P"}
WEATHER = {"temperature": 1.0, "pressure": 700.0, "humidity": 50.0, "windSpeed": 3.0,
           "windDirection": 90.0, "seeing": 0.8}  # fmt: skip


async def test_telescope_life_cycle_and_commands(broker: Connector, index: int) -> None:
    async with make_csc(TelescopeCsc, broker, index=1, settings=Settings(prefix=f"s{index}")) as h:
        await check_standard_state_transitions(
            h.remote, {"slew": SLEW, "setFilter": {"filter": "r"}}
        )
        await h.remote.command("start", {"configurationOverride": "fast"})
        await h.remote.command("enable")
        ack = await h.remote.command("setFilter", {"filter": "Halpha"}, check=False)
        assert ack.code is AckCode.FAILED
        assert "no filter 'Halpha'; the wheel has SDSSr_65mm (r), SDSSg_65mm (g)" in ack.result
        ack = await h.remote.command("setFilter", {"filter": "r", "grating": "x"}, check=False)
        assert "no grating 'x'; have empty_1, holo4_003" in ack.result
        async with h.remote.stream("filter") as filters:
            ack = await h.remote.command("setFilter", {"filter": "i", "grating": "holo4_003"})
            state = await filters.wait_for(lambda r: r.data["filter"] == "SDSSi_65mm")
        assert ack.result == "filter SDSSi_65mm (i), grating holo4_003"
        wheel = {k: state.data[k] for k in ("filter", "band", "slot", "grating", "gratingSlot")}
        assert wheel == {"filter": "SDSSi_65mm", "band": "i", "slot": 2,
                         "grating": "holo4_003", "gratingSlot": 1}  # fmt: skip
        async with h.remote.stream("target") as targets:
            await h.remote.command("slew", SLEW, timeout=30)
            target = await targets.wait_for(lambda r: r.data["object"] == "X")
        assert target.retained is False
        assert target.data["ra"] == 10.0


async def test_mount_alt_az_agrees_with_astropy(broker: Connector, index: int) -> None:
    async with make_csc(TelescopeCsc, broker, index=2, settings=Settings(prefix=f"s{index}")) as h:
        await h.remote.command("start", {"configurationOverride": "fast"})
        await h.remote.command("enable")
        await h.remote.command("slew", SLEW, timeout=30)
        async with h.remote.stream("mount", kind=Kind.TELEMETRY) as mount:
            sample = await mount.wait_for(lambda r: r.data["ra"] == 10.0)
    when = Time(sample.sent_tai, format="unix_tai", scale="tai")
    expected = SkyCoord(ra=10 * u.deg, dec=-40 * u.deg).transform_to(
        AltAz(obstime=when, location=SITE)
    )
    # sent_tai is stamped just after the position was computed: well under a second.
    assert sample.data["alt"] == pytest.approx(expected.alt.deg, abs=0.01)
    assert sample.data["az"] == pytest.approx(expected.az.deg, abs=0.05)
    assert sample.data["rotatorAngle"] == 5.0


async def test_weather_follows_set_weather_and_is_silent_when_disabled(
    broker: Connector, index: int
) -> None:
    async with make_csc(WeatherCsc, broker, index=0, settings=Settings(prefix=f"s{index}")) as h:
        await check_standard_state_transitions(h.remote, {"setWeather": WEATHER})
        await h.remote.command("start", {"configurationOverride": "fast"})  # 5 samples/s
        await h.remote.command("enable")
        async with h.remote.stream("weather", kind=Kind.TELEMETRY) as samples:
            await h.remote.command("setWeather", WEATHER)
            sample = await samples.wait_for(lambda r: r.data["pressure"] == 700.0)
            assert sample.data == {**WEATHER, "seq": sample.seq, "sent_tai": sample.sent_tai}
            await h.remote.command("disable")
            disabled = current_tai()  # a sample sent before this may still be on its way
            with pytest.raises(TimeoutError):  # six periods and more without a sample
                await samples.wait_for(lambda r: r.sent_tai > disabled, 1.2)


async def test_the_seeing_wanders_through_the_night_until_pinned(broker: Connector) -> None:
    async with make_csc(WeatherCsc, broker, index=0, settings=Settings(prefix="wander")) as h:
        station = h.csc
        assert isinstance(station, WeatherCsc)
        await h.remote.command("start")
        night = [station.now(t).seeing for t in range(0, 8 * 3600, 600)]
        assert min(night) < 0.9 * 0.8 < 1.1 * 0.8 < max(night)  # around the base 0.8"
        assert max(night) <= 0.8 * 1.25
        assert min(night) >= 0.8 * 0.75
        assert abs(station.now(0.0).seeing - station.now(1.0).seeing) < 0.001  # slowly
        await h.remote.command("enable")
        await h.remote.command("setWeather", WEATHER)
        assert {station.now(t).seeing for t in range(0, 8 * 3600, 600)} == {WEATHER["seeing"]}
        await h.remote.command("disable")
        await h.remote.command("standby")
        await h.remote.command("start")  # a new night: wandering again
        assert len({station.now(t).seeing for t in range(0, 3600, 600)}) > 1
