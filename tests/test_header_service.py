"""The Header Service on a real broker, fed by the telescope and weather simulators.

Camera events come from a scripted camera (exact timestamps, overlapping exposures,
ends that never come) and, once, from the real Camera CSC. Every header value is
checked against a value computed here, independently, with astropy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import astropy.units as u
import pytest
import yaml
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time

from cscs.core.broker import EmbeddedBroker
from cscs.core.protocol import AckCode, encode
from cscs.core.remote import Remote
from cscs.core.schema import Payload, TelemetrySpec
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.testing import CscHarness, check_standard_state_transitions, make_csc
from cscs.core.topics import CscAddress, Kind
from cscs.core.transport import Connector, Transport
from cscs.header_service.csc import ERROR_CANNOT_WRITE, HeaderServiceCsc
from sim.daq.camera import CameraCsc
from sim.ocs.telescope import DOME, TelescopeCsc
from sim.ocs.weather import WEATHER as WEATHER_TEL
from sim.ocs.weather import WeatherCsc

PACKAGE_CONFIG = Path(__file__).parents[1] / "cscs" / "header_service" / "config"
# Independent of cscs.camera.observatory: Cerro Pachón, from the observatory's site page.
SITE = EarthLocation.from_geodetic(-70.749417 * u.deg, -30.244639 * u.deg, 2663 * u.m)
WEATHER = {"temperature": 9.5, "pressure": 744.2, "humidity": 31.0, "windSpeed": 6.5,
           "windDirection": 275.0, "seeing": 0.7}  # fmt: skip


def config_dir(tmp_path: Path, **changes: Any) -> Path:
    """A HeaderService config dir: the shipped one plus an override `test.yaml`."""
    root = tmp_path / "config"
    shutil.copytree(PACKAGE_CONFIG, root / "HeaderService", dirs_exist_ok=True)
    (root / "HeaderService" / "test.yaml").write_text(yaml.safe_dump(changes))
    return root


class ScriptedCamera:
    """Publishes Camera:{index} events exactly as told (ICD §5 payloads)."""

    def __init__(self, bus: Transport, prefix: str, index: int = 1) -> None:
        self.bus = bus
        self.address = CscAddress("Camera", index, prefix)
        self.seq = 0

    async def event(self, name: str, **data: Any) -> None:
        self.seq += 1
        body = data | {"seq": self.seq, "sent_tai": current_tai()}
        await self.bus.publish(self.address.event(name), encode(body), qos=1)

    async def hardware(self) -> None:
        """The CCD in each slot, as the camera announces it when it starts."""
        await self.event(
            "focalPlaneSummaryInfo", ccdLocation="R00_S00", ccdManufacturer="ITL",
            ccdType="3800C", ccdLSSTName="ITL-3800C-068", ccdManSerNum="20862",
        )  # fmt: skip

    async def start(self, image: str, begin: float, timeout: float = 30.0) -> None:
        day, number = image.split("_")[2], int(image.split("_")[3])
        if self.seq == 0:  # the camera's events come in order: this before the first image
            await self.hardware()
        await self.event(
            "startIntegration", imageName=image, imageIndex=1, imagesInSequence=1,
            imageSource="AT", imageController="O", imageDate=day, imageNumber=number,
            groupId="grp", imageType="OBJECT", exposureTime=15.0,
            timestampAcquisitionStart=begin, timeout=timeout, additionalKeys="reason",
            additionalValues="science",
        )  # fmt: skip

    async def end(self, image: str, begin: float, finish: float) -> None:
        await self.event("endReadout", imageName=image, imageIndex=1, imagesInSequence=1,
                         requestedExposureTime=15.0, timestampEndOfReadout=finish + 2,
                         sensors="R00_S00")  # fmt: skip
        await self.event("endOfImageTelemetry", imageName=image, timestampDateObs=begin,
                         timestampDateEnd=finish, exposureTime=15.0, darkTime=15.3,
                         measuredShutterOpenTime=15.0)  # fmt: skip


@contextlib.asynccontextmanager
async def running(
    broker: Connector, prefix: str, tmp_path: Path, *, weather: bool = True,
    override: str = "", config: Path | None = None,
) -> AsyncIterator[tuple[CscHarness, CscHarness, ScriptedCamera]]:  # fmt: skip
    """Telescope:1 (+ Weather:0) and HeaderService:1 enabled, and a scripted camera."""
    async with contextlib.AsyncExitStack() as stack:
        telescope = await stack.enter_async_context(
            make_csc(TelescopeCsc, broker, index=1, settings=Settings(prefix=prefix))
        )
        await telescope.remote.command("start", {"configurationOverride": "fast"})
        await telescope.remote.command("enable")
        if weather:
            station = await stack.enter_async_context(
                make_csc(WeatherCsc, broker, index=0, settings=Settings(prefix=prefix))
            )
            await station.remote.command("start", {"configurationOverride": "fast"})
            await station.remote.command("enable")
            await station.remote.command("setWeather", WEATHER)
        header = await stack.enter_async_context(
            make_csc(HeaderServiceCsc, broker, index=1, settings=Settings(
                prefix=prefix, state_dir=tmp_path / "state", config_dir=config))
        )  # fmt: skip
        await header.remote.command("start", {"configurationOverride": override})
        await header.remote.command("enable")
        # Telemetry flows (at 5 Hz, `fast`): the service hears a sample of each first.
        # One published after this subscription is one the service (subscribed at start)
        # hears too; dome and weather are awaited side by side.
        sources = [(DOME, telescope.remote)] + ([(WEATHER_TEL, station.remote)] if weather else [])

        async def one_sample(spec: TelemetrySpec[Payload], remote: Remote) -> None:
            async with remote.events(spec) as samples:
                await samples.next(10)

        await asyncio.gather(*(one_sample(spec, remote) for spec, remote in sources))
        yield telescope, header, ScriptedCamera(header.bus, prefix)


def overhead(when: float) -> tuple[float, float]:
    """RA/Dec (deg) at the zenith of the site at ``when`` (TAI Unix seconds)."""
    t = Time(when, format="unix_tai", scale="tai")
    lst = t.sidereal_time("apparent", longitude=SITE.lon).deg
    return round(lst % 360.0, 4), -30.2446


def load(announcement: dict[str, Any]) -> dict[str, Any]:
    path = Path(urlparse(announcement["url"]).path)
    data = path.read_bytes()
    assert announcement["byteSize"] == len(data)
    assert announcement["checkSum"] == hashlib.md5(data).hexdigest()
    document: dict[str, Any] = yaml.safe_load(data)
    return document


def primary(document: dict[str, Any]) -> dict[str, Any]:
    return {card["keyword"]: card["value"] for card in document["primary"]}


async def test_every_value_matches_an_independent_computation(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    async with running(broker, f"h{index}", tmp_path) as (telescope, header, camera):
        begin = current_tai()
        ra, dec = overhead(begin)
        ra = (ra - 20.0) % 360.0  # over an hour east of the meridian: no angle is trivial
        await telescope.remote.command(
            "slew", {"ra": ra, "dec": dec, "rotatorAngle": 12.5, "object": "NGC 300",
                     "program": "BLOCK-7"}, timeout=30,
        )  # fmt: skip
        await telescope.remote.command("setFilter", {"filter": "r"}, timeout=30)
        async with telescope.remote.stream("dome", kind=Kind.TELEMETRY) as dome:
            await dome.next(10)  # the dome has caught up with the slew
        async with header.remote.stream("largeFileObjectAvailable") as announcements:
            begin = current_tai()
            await camera.start("AT_O_20261121_000042", begin)
            finish = begin + 15.0
            await camera.end("AT_O_20261121_000042", begin, finish)
            announced = (await announcements.next(30)).data
    assert announced["id"] == "AT_O_20261121_000042"
    assert announced["missingKeywords"] == ""
    document = load(announced)
    keywords = primary(document)
    assert document["missing"] == []
    # Astropy, called here and not through the code under test.
    start_time = Time(begin, format="unix_tai", scale="tai")
    end_time = Time(finish, format="unix_tai", scale="tai")
    middle = Time((begin + finish) / 2, format="unix_tai", scale="tai")
    target = SkyCoord(ra=ra * u.deg, dec=dec * u.deg)
    at_start = target.transform_to(AltAz(obstime=start_time, location=SITE))
    at_end = target.transform_to(AltAz(obstime=end_time, location=SITE))
    at_middle = target.transform_to(AltAz(obstime=middle, location=SITE))
    lst_start = start_time.sidereal_time("apparent", longitude=SITE.lon).hour
    lst_end = end_time.sidereal_time("apparent", longitude=SITE.lon).hour
    assert keywords["AIRMASS"] == pytest.approx(float(at_middle.secz), rel=1e-6)
    assert keywords["ELSTART"] == pytest.approx(at_start.alt.deg, abs=1e-6)
    assert keywords["ELEND"] == pytest.approx(at_end.alt.deg, abs=1e-6)
    assert keywords["AZSTART"] == pytest.approx(at_start.az.deg, abs=1e-6)
    assert keywords["AZEND"] == pytest.approx(at_end.az.deg, abs=1e-6)
    assert keywords["HASTART"] == pytest.approx((lst_start - ra / 15 + 12) % 24 - 12, abs=1e-6)
    assert keywords["HAEND"] == pytest.approx((lst_end - ra / 15 + 12) % 24 - 12, abs=1e-6)
    assert keywords["DATE-OBS"] == keywords["DATE-BEG"] == start_time.isot
    assert keywords["DATE-END"] == end_time.isot
    assert keywords["MJD-OBS"] == pytest.approx(start_time.mjd, abs=1e-9)
    assert keywords["MJD-END"] == pytest.approx(end_time.mjd, abs=1e-9)
    assert keywords["TIMESYS"] == "TAI"
    expected = {
        "RA": ra, "DEC": dec, "RASTART": ra, "DECSTART": dec, "RAEND": ra, "DECEND": dec,
        "ROTPA": 12.5, "ROTCOORD": "sky", "TRACKSYS": "RADEC", "RADESYS": "ICRS",
        "OBJECT": "NGC 300", "PROGRAM": "BLOCK-7", "REASON": "science", "CURINDEX": 1,
        "MAXINDEX": 1, "FILTER": "SDSSr_65mm", "FILTBAND": "r", "FILTSLOT": 0,
        "GRATING": "empty_1", "GRATSLOT": 0, "FOCUSZ": 0.0, "AIRTEMP": 9.5,
        "PRESSURE": pytest.approx(74420.0), "HUMIDITY": 31.0, "WINDSPD": 6.5,
        "WINDDIR": 275.0, "SEEING": 0.7, "OBSID": "AT_O_20261121_000042",
        "DAYOBS": "20261121", "SEQNUM": 42, "IMGTYPE": "OBJECT", "GROUPID": "grp",
        "EXPTIME": 15.0, "DARKTIME": 15.3, "SHUTTIME": 15.0, "CAMCODE": "AT",
        "CONTRLLR": "O", "INSTRUME": "LATISS", "TELESCOP": "LSST AuxTelescope",
        "BUNIT": "adu", "OBS-ELEV": 2663.0,
    }  # fmt: skip
    assert {k: keywords[k] for k in expected} == expected
    assert keywords["AMSTART"] == pytest.approx(float(at_start.secz), rel=1e-6)
    assert keywords["AMEND"] == pytest.approx(float(at_end.secz), rel=1e-6)
    geocentric = SITE.geocentric
    assert [keywords[f"OBSGEO-{c}"] for c in "XYZ"] == pytest.approx(
        [g.to_value(u.m) for g in geocentric], abs=0.01
    )
    # The dome follows the mount: its azimuth at the start is the target's azimuth then.
    assert keywords["DOMEAZ"] == pytest.approx(at_start.az.deg, abs=0.5)
    detector = {c["keyword"]: c["value"] for c in document["detectors"]["R00_S00"]}
    assert list(document["detectors"]) == ["R00_S00"]
    assert {k: detector[k] for k in ("RAFTBAY", "CCDSLOT", "CCD_MANU", "CCD_TYPE",
                                     "LSST_NUM", "CCD_SERN", "CTYPE1", "CTYPE2")} == {
        "RAFTBAY": "R00", "CCDSLOT": "S00", "CCD_MANU": "ITL",
        "CCD_TYPE": "3800C", "LSST_NUM": "ITL-3800C-068", "CCD_SERN": "20862",
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
    }  # fmt: skip
    # LATISS's one CCD is on the optical axis: the WCS's reference is the pointing.
    assert (detector["CRVAL1"], detector["CRVAL2"]) == pytest.approx((ra % 360, dec))
    assert (detector["CRPIX1"], detector["CRPIX2"]) == (2036.5, 2000.5)
    assert document["segments"] == {}  # the archiver writes them, from the geometry


async def test_an_absent_source_is_listed_missing_never_invented(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    async with (
        running(broker, f"h{index}", tmp_path, weather=False) as (_, header, camera),
        header.remote.stream("largeFileObjectAvailable") as announcements,
    ):
        begin = current_tai()
        await camera.start("AT_O_20261121_000001", begin)
        await camera.end("AT_O_20261121_000001", begin, begin + 15)
        announced = (await announcements.next(30)).data
    weather = ["AIRTEMP", "PRESSURE", "HUMIDITY", "WINDSPD", "WINDDIR", "SEEING"]
    assert announced["missingKeywords"].split(",") == weather
    document = load(announced)
    keywords = primary(document)
    assert all(keywords[k] is None for k in weather)
    reasons = {m["keyword"]: m["reason"] for m in document["missing"]}
    assert reasons["AIRTEMP"] == "nothing received from Weather:0 tel/weather"
    assert "no value during the exposure" in reasons["WINDSPD"]
    assert keywords["RA"] is not None  # the rest is there


async def test_telemetry_that_stops_mid_exposure_is_stale_not_used(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """Real telemetry that falls silent, on a real broker (the system tier)."""
    broker = site_broker
    rules = yaml.safe_load((PACKAGE_CONFIG / "_init.yaml").read_text())["keywords"]
    for rule in rules:
        if rule["source"] == "Weather:0":
            rule["max_age"] = 1.5
    config = config_dir(tmp_path, keywords=rules)
    async with running(broker, f"h{index}", tmp_path, override="test", config=config) as (
        _, header, camera,
    ):  # fmt: skip
        weather = CscAddress("Weather", 0, f"h{index}")
        async with header.remote.stream("largeFileObjectAvailable") as announcements:
            begin = current_tai()
            await camera.start("AT_O_20261121_000002", begin)
            async with broker.transport() as bus, Remote(bus, weather) as station:
                await station.command("disable")  # the station stops publishing
                async with station.stream("weather", kind=Kind.TELEMETRY) as samples:
                    # No sample for longer than max_age: wait for the silence itself.
                    with pytest.raises(TimeoutError):
                        await samples.next(timeout=2.0)
            await camera.end("AT_O_20261121_000002", begin, current_tai())
            announced = (await announcements.next(30)).data
    document = load(announced)
    reasons = {m["keyword"]: m["reason"] for m in document["missing"]}
    assert set(reasons) == {"AIRTEMP", "PRESSURE", "HUMIDITY", "WINDDIR", "SEEING"}
    assert "Weather:0 tel/weather is stale" in reasons["AIRTEMP"]
    assert primary(document)["WINDSPD"] == 6.5  # the max over what did arrive


async def test_overlapping_exposures_are_independent(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    async with running(broker, f"h{index}", tmp_path) as (_, header, camera):
        async with header.remote.stream("largeFileObjectAvailable") as announcements:
            a, b = current_tai(), current_tai() + 1.0
            await camera.start("AT_O_20261121_000010", a)
            await camera.start("AT_O_20261121_000011", b)
            await camera.end("AT_O_20261121_000011", b, b + 15)
            await camera.end("AT_O_20261121_000010", a, a + 30)
            got = [(await announcements.next(30)).data for _ in range(2)]
        by_id = {a["id"]: a for a in got}  # independent: either may be announced first
        assert set(by_id) == {"AT_O_20261121_000010", "AT_O_20261121_000011"}
        late = primary(load(by_id["AT_O_20261121_000011"]))
        early = primary(load(by_id["AT_O_20261121_000010"]))
        assert late["DATE-OBS"] == Time(b, format="unix_tai", scale="tai").isot
        assert early["DATE-END"] == Time(a + 30, format="unix_tai", scale="tai").isot
        assert (late["SEQNUM"], early["SEQNUM"]) == (11, 10)
        csc = header.csc
        assert isinstance(csc, HeaderServiceCsc)
        for image in by_id:  # announced; clean-up may still run
            await asyncio.wait_for(csc.exposure_done(image), 10)
        assert not csc.exposures


async def test_an_exposure_whose_end_never_comes_is_abandoned_cleanly(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    async with running(broker, f"h{index}", tmp_path) as (_, header, camera):
        csc = header.csc
        assert isinstance(csc, HeaderServiceCsc)
        async with header.remote.stream("logMessage") as logs:
            await camera.start("AT_O_20261121_000020", current_tai(), timeout=0.5)
            log = await logs.wait_for(lambda r: "abandoned" in r.data["message"], timeout=10)
        assert "AT_O_20261121_000020" in log.data["message"]
        assert log.data["level"] == 30
        # Logged; clean-up may still run, and then nothing of the exposure is left.
        await asyncio.wait_for(csc.exposure_done("AT_O_20261121_000020"), 10)
        assert not csc.exposures
        # The service carries on with the next exposure.
        async with header.remote.stream("largeFileObjectAvailable") as announcements:
            begin = current_tai()
            await camera.start("AT_O_20261121_000021", begin)
            await camera.end("AT_O_20261121_000021", begin, begin + 1)
            assert (await announcements.next(30)).data["id"] == "AT_O_20261121_000021"


async def test_an_unwritable_output_directory_is_a_fault(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = config_dir(tmp_path, output_dir=str(blocker / "headers"))
    async with running(broker, f"h{index}", tmp_path, override="test", config=config) as (
        _, header, camera,
    ):  # fmt: skip
        async with header.remote.stream("errorCode") as errors:
            begin = current_tai()
            await camera.start("AT_O_20261121_000030", begin)
            await camera.end("AT_O_20261121_000030", begin, begin + 1)
            error = (await errors.wait_for(lambda r: r.data["errorCode"] != 0, 30)).data
        assert error["errorCode"] == ERROR_CANNOT_WRITE
        assert "cannot write the header of AT_O_20261121_000030" in error["errorReport"]
        assert "Not a directory" in error["errorReport"]
        await header.remote.wait_for_state(State.FAULT)


async def test_standard_state_transitions_and_a_bad_keyword_map(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    config = config_dir(tmp_path, keywords=[
        {"keyword": "AIRMASS", "source": "Weather:0", "topic": "tel/weather", "field": "x"}
    ])  # fmt: skip
    settings = Settings(prefix=f"h{index}", state_dir=tmp_path, config_dir=config)
    async with make_csc(HeaderServiceCsc, broker, index=1, settings=settings) as header:
        await check_standard_state_transitions(header.remote)
        ack = await header.remote.command("start", {"configurationOverride": "test"}, check=False)
        assert ack.code is AckCode.FAILED
        assert "AIRMASS is computed by the header service" in ack.result


async def test_with_the_real_camera(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """The camera simulator's own events, on a real broker (the system tier)."""
    broker = site_broker
    prefix = f"h{index}"
    async with (
        running(broker, prefix, tmp_path) as (_, header, _camera),
        make_csc(CameraCsc, broker, index=1,
                 settings=Settings(prefix=prefix, state_dir=tmp_path / "camera")) as camera,
    ):  # fmt: skip
        await camera.remote.command("start", {"configurationOverride": "fast"})
        await camera.remote.command("enable")
        async with header.remote.stream("largeFileObjectAvailable") as announcements:
            await camera.remote.command(
                "takeImages",
                {"numImages": 2, "expTime": 0.5, "shutter": True, "imageType": "OBJECT"},
                timeout=30,
            )
            ids = [(await announcements.next(30)).data for _ in range(2)]
    documents = [primary(load(a)) for a in ids]
    assert [d["SEQNUM"] for d in documents] == [1, 2]
    assert all(d["EXPTIME"] == 0.5 for d in documents)
    assert all(d["DARKTIME"] >= 0.5 for d in documents)


async def test_malformed_camera_events_are_ignored_and_the_service_carries_on(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    async with running(broker, f"h{index}", tmp_path) as (_, header, camera):
        topic = camera.address.event("startIntegration")
        for payload in (
            b"{not json",
            b"[1,2]",
            b'{"imageName": 7}',
            b'{"imageName": "X"}',
            encode({"imageName": "AT_O_20261121_000050", "timeout": "soon"}),
        ):
            await camera.bus.publish(topic, payload, qos=1)
        await camera.event("endOfImageTelemetry", imageName="AT_O_20261121_000050")
        async with header.remote.stream("largeFileObjectAvailable") as announcements:
            begin = current_tai()
            await camera.start("AT_O_20261121_000051", begin)
            await camera.end("AT_O_20261121_000051", begin, begin + 1)
            assert (await announcements.next(30)).data["id"] == "AT_O_20261121_000051"
        assert header.csc.state is State.ENABLED
