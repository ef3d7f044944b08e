"""Headers rebuilt from the EFD: the same rules as live, over what the EFD recorded.

Offline (the in-memory bus): the test publishes every message the header service hears
and records the same message, with the same ``sent_tai``, in an in-memory EFD, as the
EFD writer does; the live header and the rebuilt one must then agree keyword by keyword.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cscs.camera.events import EndOfImageTelemetry, StartIntegration
from cscs.camera.geometry import Camera, camera_for_index
from cscs.camera.headers.rebuild import RebuildHeaders, image_range
from cscs.camera.headers.yaml_codec import parse_header_document
from cscs.camera.naming import day_obs
from cscs.core.protocol import encode
from cscs.core.remote import AckError
from cscs.core.settings import Settings
from cscs.core.tai import current_tai
from cscs.core.testing import CscHarness, make_csc
from cscs.core.testing.memory import MemoryBroker
from cscs.core.topics import CscAddress, Kind
from cscs.efd.memory import MemoryStore
from cscs.efd.records import EfdRecord, Measurement, flatten_fields
from cscs.header_service.collect import KeywordRule, Missing, Value
from cscs.header_service.csc import HeaderServiceCsc
from cscs.header_service.derived import derived_keywords
from cscs.header_service.detectors import mid_exposure_pointing
from cscs.header_service.rebuild import EfdHeaders, supplies_more

IMAGE = "AT_O_20261121_000042"
TODAY = day_obs(current_tai())  # a live image's dayObs is today's: the EFD is searched there
LIVE = f"AT_O_{TODAY}_000042"
PREFIX = "rb"
KEYWORDS = [
    {"keyword": "RA", "source": "Telescope:{camera}", "topic": "evt/target", "field": "ra"},
    {"keyword": "DEC", "source": "Telescope:{camera}", "topic": "evt/target", "field": "dec"},
    {"keyword": "RASTART", "source": "Telescope:{camera}", "topic": "tel/mount", "field": "ra"},
    {"keyword": "DECSTART", "source": "Telescope:{camera}", "topic": "tel/mount", "field": "dec"},
    {"keyword": "RAEND", "source": "Telescope:{camera}", "topic": "tel/mount", "field": "ra",
     "moment": "end"},
    {"keyword": "DECEND", "source": "Telescope:{camera}", "topic": "tel/mount", "field": "dec",
     "moment": "end"},
    {"keyword": "ROTPA", "source": "Telescope:{camera}", "topic": "tel/mount",
     "field": "rotatorAngle"},
    {"keyword": "FILTER", "source": "Telescope:{camera}", "topic": "evt/filter",
     "field": "filter", "moment": "endReadout"},
    {"keyword": "WINDMAX", "source": "Weather:0", "topic": "tel/weather", "field": "windSpeed",
     "monitor": "max"},
    {"keyword": "WINDMIN", "source": "Weather:0", "topic": "tel/weather", "field": "windSpeed",
     "monitor": "min"},
    {"keyword": "WINDMEAN", "source": "Weather:0", "topic": "tel/weather", "field": "windSpeed",
     "monitor": "mean"},
    {"keyword": "AIRTEMP", "source": "Weather:0", "topic": "tel/weather", "field": "temperature",
     "moment": "end", "max_age": 60},
    {"keyword": "PRESSURE", "source": "Weather:0", "topic": "tel/weather", "field": "pressure",
     "moment": "end", "scale": 100.0},
    {"keyword": "HUMIDITY", "source": "Weather:0", "topic": "tel/weather", "field": "humidity"},
    {"keyword": "DOMEAZ", "source": "Telescope:{camera}", "topic": "tel/dome", "field": "azimuth",
     "max_age": 3},
]  # fmt: skip


class Site:
    """Publishes what the header service hears, and records it as the EFD writer would."""

    def __init__(self, harness: CscHarness, store: MemoryStore) -> None:
        self.harness = harness
        self.store = store
        self.seqs: dict[tuple[str, int, str], int] = {}
        self.publishing = True  # False: recorded in the EFD only (the service is away)

    async def send(self, csc: str, index: int, kind: Kind, name: str, **data: Any) -> float:
        seq = self.seqs[(csc, index, name)] = self.seqs.get((csc, index, name), 0) + 1
        sent = current_tai()
        body = data | {"seq": seq, "sent_tai": sent}
        address = CscAddress(csc, index, PREFIX)
        topic = address.event(name) if kind is Kind.EVENT else address.telemetry(name)
        if self.publishing:
            await self.harness.bus.publish(topic, encode(body), qos=1)
        measurement = Measurement(csc, kind, name)
        self.store.write([EfdRecord(measurement, index, seq, sent, sent, flatten_fields(body))])
        if self.publishing:  # heard by the service before the next is sent: in order
            await self.harness.csc.bus.settled(5.0)
        return sent

    async def camera(self, name: str, **data: Any) -> float:
        return await self.send("Camera", 1, Kind.EVENT, name, **data)

    async def mount(self, ra: float) -> None:
        await self.send("Telescope", 1, Kind.TELEMETRY, "mount", ra=ra, dec=-30.1,
                        rotatorAngle=12.5)  # fmt: skip

    async def weather(self, wind: float) -> None:
        await self.send("Weather", 0, Kind.TELEMETRY, "weather", windSpeed=wind,
                        temperature=9.5, pressure=744.2)  # fmt: skip

    async def before(self) -> None:
        """What is in force before the exposure."""
        await self.camera(
            "focalPlaneSummaryInfo", ccdLocation="R00_S00", ccdManufacturer="ITL",
            ccdType="3800C", ccdLSSTName="ITL-3800C-068", ccdManSerNum="20862",
        )  # fmt: skip
        await self.send("Telescope", 1, Kind.EVENT, "target", ra=150.0, dec=-30.1)
        await self.send("Telescope", 1, Kind.EVENT, "filter", filter="SDSSr_65mm")

    async def exposure(
        self, image: str, winds: list[float], weather: bool = True, image_date: str = ""
    ) -> None:
        """One exposure, with telemetry flowing through it (none from the weather
        station unless ``weather``); its ``imageDate`` its name's unless given."""
        day, number = image_date or image.split("_")[2], int(image.split("_")[3])
        await self.mount(150.0)
        if weather:
            await self.weather(3.0)  # in force at the start: counted by the monitors
        begin = await self.camera(
            "startIntegration", imageName=image, imageIndex=1, imagesInSequence=1,
            imageSource="AT", imageController="O", imageDate=day, imageNumber=number,
            groupId="grp", imageType="OBJECT", exposureTime=15.0,
            timestampAcquisitionStart=current_tai(), timeout=30.0, additionalKeys="reason",
            additionalValues="science",
        )  # fmt: skip
        for i, wind in enumerate(winds):
            await self.mount(150.0 + 0.001 * (i + 1))
            await self.weather(wind)
        await self.camera("startReadout", imageName=image, timestampStartOfReadout=begin + 15)
        await self.send("Telescope", 1, Kind.EVENT, "filter", filter="SDSSg_65mm")
        await self.camera("endReadout", imageName=image, imageIndex=1, imagesInSequence=1,
                          requestedExposureTime=15.0, timestampEndOfReadout=begin + 17,
                          sensors="R00_S00")  # fmt: skip
        await self.mount(150.01)
        await self.camera("endOfImageTelemetry", imageName=image, timestampDateObs=begin,
                          timestampDateEnd=begin + 15.0, exposureTime=15.0, darkTime=15.3,
                          measuredShutterOpenTime=15.0)  # fmt: skip


def config_dir(tmp_path: Path, **extra: Any) -> Path:
    root = tmp_path / "config" / "HeaderService"
    root.mkdir(parents=True, exist_ok=True)
    (root / "test.yaml").write_text(yaml.safe_dump({"keywords": KEYWORDS, **extra}))
    return tmp_path / "config"


@contextlib.asynccontextmanager
async def service(
    tmp_path: Path, store: MemoryStore, broker: MemoryBroker | None = None, **extra: Any
) -> AsyncIterator[tuple[CscHarness, Site]]:
    settings_ = Settings(prefix=PREFIX, state_dir=tmp_path / "state",
                         config_dir=config_dir(tmp_path, **extra))  # fmt: skip
    broker = broker or MemoryBroker()
    async with make_csc(HeaderServiceCsc, broker, index=1, settings=settings_) as h:
        csc = h.csc
        assert isinstance(csc, HeaderServiceCsc)
        csc.rebuilder.open_efd = lambda: store
        await h.remote.command("start", {"configurationOverride": "test"})
        await h.remote.command("enable")
        yield h, Site(h, store)


def load(url: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(Path(urlparse(url).path).read_bytes())
    return data


def cards(document: dict[str, Any]) -> dict[str, Any]:
    values = {c["keyword"]: c["value"] for c in document["primary"]}
    for sensor, entries in document["detectors"].items():
        values |= {f"{sensor}.{c['keyword']}": c["value"] for c in entries}
    return values


def rebuilder(csc: HeaderServiceCsc, store: MemoryStore, output: Path) -> EfdHeaders:
    return EfdHeaders(store, camera_for_index(1), 1, csc.rules, output,
                      generator=str(csc.address), version=csc.version)  # fmt: skip


async def test_the_replay_makes_the_live_header(tmp_path: Path) -> None:
    store = MemoryStore()
    async with service(tmp_path, store) as (h, site):
        csc = h.csc
        assert isinstance(csc, HeaderServiceCsc)
        await site.before()
        async with h.remote.stream("largeFileObjectAvailable") as announcements:
            await site.exposure(LIVE, [5.5, 1.5, 7.25, 4.0])
            announced = (await announcements.next(10)).data
        live = load(announced["url"])
        outcome = rebuilder(csc, store, tmp_path / "rebuilt").rebuild(LIVE)
    assert outcome.status == "rebuilt", outcome
    assert announced["rebuilt"] is False
    rebuilt = load(outcome.url)
    ours, theirs = cards(live), cards(rebuilt)
    assert (ours.pop("HDRSRC"), theirs.pop("HDRSRC")) == ("live", "EFD")
    assert ours.keys() == theirs.keys()
    for keyword, value in ours.items():
        assert theirs[keyword] == (pytest.approx(value, rel=1e-12) if isinstance(value, float)
                                   else value), keyword  # fmt: skip
    # The monitors over the exposure: the value in force at the start, then each sample.
    assert (ours["WINDMIN"], ours["WINDMAX"]) == (1.5, 7.25)
    assert ours["WINDMEAN"] == pytest.approx((3.0 + 5.5 + 1.5 + 7.25 + 4.0) / 5)
    assert ours["FILTER"] == "SDSSg_65mm"  # as at endReadout
    assert ours["R00_S00.LSST_NUM"] == "ITL-3800C-068"
    # What neither heard stays missing, with the same reason; nothing is invented.
    assert live["missing"] == rebuilt["missing"]
    reasons = {m["keyword"]: m["reason"] for m in rebuilt["missing"]}
    assert reasons["HUMIDITY"] == "Weather:0 tel/weather has no field 'humidity'"
    assert reasons["DOMEAZ"] == "nothing received from Telescope:1 tel/dome"
    assert theirs["HUMIDITY"] is None


async def test_a_live_header_missing_what_the_efd_heard_is_rebuilt(tmp_path: Path) -> None:
    """The service restarted: the weather it did not hear since is in the EFD."""
    store = MemoryStore()
    sent = current_tai()
    weather = {"windSpeed": 2.0, "temperature": 8.0, "pressure": 740.0}
    store.write([EfdRecord(Measurement("Weather", Kind.TELEMETRY, "weather"), 0, 1, sent, sent,
                           flatten_fields(weather))])  # fmt: skip
    async with service(tmp_path, store, rebuild_delay=0.0) as (h, site):
        await site.before()
        async with h.remote.stream("largeFileObjectAvailable") as announcements:
            await site.exposure(LIVE, [], weather=False)
            first = (await announcements.next(10)).data
            second = (await announcements.next(10)).data
    assert first["rebuilt"] is False
    assert "AIRTEMP" in first["missingKeywords"].split(",")
    assert second["rebuilt"] is True
    assert second["url"] == first["url"]  # the same document, replaced
    rebuilt = cards(load(second["url"]))
    assert (rebuilt["HDRSRC"], rebuilt["AIRTEMP"]) == ("EFD", 8.0)
    assert len(second["missingKeywords"].split(",")) < len(first["missingKeywords"].split(","))


async def test_a_live_header_and_its_rebuild_go_to_one_place_whatever_the_image_date(
    tmp_path: Path,
) -> None:
    """A startIntegration whose imageDate is not its name's dayObs: the live document
    goes where the rebuild looks for it (the name's dayObs), and is replaced there."""
    store = MemoryStore()
    sent = current_tai()
    weather = {"windSpeed": 2.0, "temperature": 8.0, "pressure": 740.0}
    store.write([EfdRecord(Measurement("Weather", Kind.TELEMETRY, "weather"), 0, 1, sent, sent,
                           flatten_fields(weather))])  # fmt: skip
    async with service(tmp_path, store, rebuild_delay=0.0) as (h, site):
        await site.before()
        async with h.remote.stream("largeFileObjectAvailable") as announcements:
            await site.exposure(LIVE, [], weather=False, image_date="20200101")
            first = (await announcements.next(10)).data
            second = (await announcements.next(10)).data
    assert (first["rebuilt"], second["rebuilt"]) == (False, True)
    assert second["url"] == first["url"]  # the same document, replaced
    assert Path(urlparse(first["url"]).path).parent.name == TODAY


async def test_the_command_rebuilds_a_range_and_says_what_it_did(tmp_path: Path) -> None:
    store = MemoryStore()
    async with service(tmp_path, store) as (h, site):
        csc = h.csc
        assert isinstance(csc, HeaderServiceCsc)
        await site.before()
        for number in (1, 2):
            await site.exposure(f"AT_O_{TODAY}_{number:06d}", [4.0])
        for number in (1, 2):
            await csc.exposure_done(f"AT_O_{TODAY}_{number:06d}")
        # Image 1's document is lost; image 3 was never taken.
        day = csc.output_dir / TODAY
        (day / f"AT_O_{TODAY}_000001.yaml").unlink()
        async with h.remote.stream("largeFileObjectAvailable") as announcements:
            ack = await h.remote.command(
                "rebuildHeaders", {"firstImage": f"AT_O_{TODAY}_000001",
                                   "lastImage": f"AT_O_{TODAY}_000003"}, timeout=30,
            )  # fmt: skip
            announced = (await announcements.next(10)).data
        assert ack.result == (
            "3 image(s): 1 rebuilt, 0 already complete, 1 unchanged (the EFD lacks what they "
            "lack), 1 not in the EFD, 0 not ended in the EFD (yet), 0 being collected live, "
            "0 failed"
        )
        assert (announced["id"], announced["rebuilt"]) == (f"AT_O_{TODAY}_000001", True)
        assert cards(load(announced["url"]))["HDRSRC"] == "EFD"
        for params, cause in [
            ({"firstImage": "CC_O_20261121_000001"}, "not an image of this camera"),
            ({"firstImage": f"AT_O_{TODAY}_000001", "lastImage": "AT_O_20261122_000002"},
             "not of the same dayObs"),
            ({"firstImage": f"AT_O_{TODAY}_000005", "lastImage": f"AT_O_{TODAY}_000004"},
             "comes before"),
            ({"firstImage": f"AT_O_{TODAY}_000001", "lastImage": f"AT_O_{TODAY}_002000"},
             "at most 1000"),
            ({"firstImage": "../etc"}, "firstImage"),
        ]:  # fmt: skip
            with pytest.raises(AckError, match=cause):
                await h.remote.command("rebuildHeaders", params)


async def test_a_service_enabled_again_rebuilds_what_it_missed(tmp_path: Path) -> None:
    """The exposure was heard (and recorded) while this service was away: at enable it
    finds the image in the EFD, with no document, and rebuilds it."""
    store = MemoryStore()
    async with service(tmp_path, store) as (h, site):
        csc = h.csc
        assert isinstance(csc, HeaderServiceCsc)
        await h.remote.command("disable")  # away: what comes is only recorded
        await site.before()
        await site.exposure(LIVE, [4.0, 6.0])
        assert not list(csc.output_dir.rglob("*.yaml"))
        async with h.remote.stream("largeFileObjectAvailable") as announcements:
            await h.remote.command("enable")
            announced = (await announcements.next(10)).data
    assert (announced["id"], announced["rebuilt"]) == (LIVE, True)
    rebuilt = cards(load(announced["url"]))
    assert (rebuilt["HDRSRC"], rebuilt["WINDMAX"], rebuilt["FILTER"]) == ("EFD", 6.0, "SDSSg_65mm")


async def test_what_was_said_while_the_broker_was_away_is_rebuilt_at_reconnection(
    tmp_path: Path,
) -> None:
    store, broker = MemoryStore(), MemoryBroker()
    async with service(tmp_path, store, broker) as (h, site):
        await site.before()
        await site.exposure(f"AT_O_{TODAY}_000001", [])  # a live header: the last one
        broker.stop()
        site.publishing = False  # the EFD writer, elsewhere, heard this exposure
        await site.exposure(LIVE, [5.0])
        async with h.remote.stream("largeFileObjectAvailable") as announcements:
            broker.start()
            announced = await announcements.wait_for(lambda a: a.data["id"] == LIVE, 10)
    assert announced.data["rebuilt"] is True


async def test_the_pass_at_enable_goes_through_every_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cscs.header_service.rebuilder.MAX_SCANNED", 2)
    store = MemoryStore()
    images = [f"AT_O_{TODAY}_{n:06d}" for n in range(1, 6)]
    async with service(tmp_path, store) as (h, site):
        await h.remote.command("disable")
        await site.before()
        for image in images:
            await site.exposure(image, [])
        async with h.remote.stream("largeFileObjectAvailable") as announcements:
            await h.remote.command("enable")
            rebuilt = [(await announcements.next(10)).data for _ in images]
    assert [a["id"] for a in rebuilt] == images
    assert all(a["rebuilt"] for a in rebuilt)


@pytest.mark.parametrize(
    ("existing", "rebuilt", "better"),
    [
        (None, ("A", "B"), True),  # no document there: anything is better
        (("B", "C"), ("B",), True),  # a strict subset
        (("B", "C"), ("A",), False),  # fewer, but would drop A's value
        (("B", "C"), ("C", "B"), False),  # the same set
        ((), (), False),
    ],
)
def test_a_rebuild_replaces_a_document_only_when_it_lacks_a_strict_subset(
    existing: tuple[str, ...] | None, rebuilt: tuple[str, ...], better: bool
) -> None:
    assert supplies_more(existing, rebuilt) is better


async def test_a_page_of_junk_starts_does_not_end_the_pass_at_enable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cscs.header_service.rebuilder.MAX_SCANNED", 3)
    store = MemoryStore()
    images = [f"AT_O_{TODAY}_{n:06d}" for n in range(1, 3)]
    async with service(tmp_path, store) as (h, site):
        await h.remote.command("disable")
        await site.before()
        await site.exposure(images[0], [])
        # Junk right after the first image's start, before the second's: repeats, a
        # name of no camera, another camera's image, an invalid start.
        first = store.records([Measurement("Camera", Kind.EVENT, "startIntegration")], 0.0,
                              current_tai(), index=1)[0].sent_tai  # fmt: skip
        junk = [_start_record(images[0], first + n * 1e-6, imageNumber=1) for n in range(1, 5)]
        junk += [_start_record("junk", first + 5e-6), _start_record(f"CC_O_{TODAY}_000001",
                 first + 6e-6), _start_record(IMAGE, first + 7e-6, timeout="no")]  # fmt: skip
        store.write([dataclasses.replace(r, seq=n + 1000) for n, r in enumerate(junk)])
        await site.exposure(images[1], [])
        async with h.remote.stream("largeFileObjectAvailable") as announcements:
            await h.remote.command("enable")
            rebuilt = [(await announcements.next(10)).data for _ in images]
    assert [a["id"] for a in rebuilt] == images


def test_image_range_names_each_image() -> None:
    params = RebuildHeaders(firstImage="CC_O_20261121_000009", lastImage="CC_O_20261121_000011")
    assert image_range(params, "CC") == [
        "CC_O_20261121_000009", "CC_O_20261121_000010", "CC_O_20261121_000011"]  # fmt: skip
    assert image_range(RebuildHeaders(firstImage="CC_O_20261121_000009"), "CC") == [
        "CC_O_20261121_000009"
    ]


def _start_record(image: str, sent: float, **fields: Any) -> EfdRecord:
    base = {"imageName": image, "imageIndex": 1, "imagesInSequence": 1, "imageSource": "AT",
            "imageController": "O", "imageDate": "20261121", "imageNumber": 42,
            "groupId": "g", "imageType": "OBJECT", "exposureTime": 1.0,
            "timestampAcquisitionStart": sent, "timeout": 30.0, "additionalKeys": "",
            "additionalValues": ""}  # fmt: skip
    return EfdRecord(Measurement("Camera", Kind.EVENT, "startIntegration"), 1, 1, sent, sent,
                     flatten_fields(base | fields))  # fmt: skip


RULES = [KeywordRule.model_validate(k) for k in KEYWORDS]
_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
_SENT = 1_795_262_400.0  # 2026-11-21 12:00 UTC: inside the dayObs of IMAGE
#: Valid payloads of the image's camera events: each example spoils some of their fields.
_VALID: dict[str, dict[str, Any]] = {
    "startReadout": {"imageName": IMAGE, "timestampStartOfReadout": _SENT + 1},
    "endReadout": {"imageName": IMAGE, "imageIndex": 1, "imagesInSequence": 1,
                   "requestedExposureTime": 1.0, "timestampEndOfReadout": _SENT + 2,
                   "sensors": "R00_S00"},
    "endOfImageTelemetry": {"imageName": IMAGE, "timestampDateObs": _SENT,
                            "timestampDateEnd": _SENT + 1, "exposureTime": 1.0,
                            "darkTime": 1.0, "measuredShutterOpenTime": 1.0},
    "focalPlaneSummaryInfo": {"ccdLocation": "R00_S00", "ccdManufacturer": "ITL",
                              "ccdType": "3800C", "ccdLSSTName": "ITL-3800C-068",
                              "ccdManSerNum": "1"},
}  # fmt: skip
_FIELDS = sorted({k for v in _VALID.values() for k in v} | {"sensors0", "x0"})


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=st.lists(
        st.tuples(st.sampled_from(sorted(_VALID)),
                  st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=3),
                  st.floats(-5, 50)),
        max_size=8,
    ),
    samples=st.lists(
        st.tuples(st.sampled_from(["mount", "weather", "dome", "target", "filter"]),
                  st.dictionaries(st.sampled_from(["ra", "dec", "windSpeed", "temperature",
                                                   "rotatorAngle", "ra0", "azimuth", "filter",
                                                   "pressure", "humidity"]),
                                  _values, max_size=6),
                  st.floats(-20, 50)),
        max_size=20,
    ),
)  # fmt: skip
def test_hostile_efd_content_never_crashes_a_rebuild(
    tmp_path: Path,
    events: list[tuple[str, dict[str, Any], float]],
    samples: list[tuple[str, dict[str, Any], float]],
) -> None:
    """Camera events valid but for a few spoiled fields, sources with anything in them,
    at any time around the exposure: a rebuild ends with an outcome, never a crash, and
    a document it writes is one the archiver's schema reads."""
    store = MemoryStore()
    records = [_start_record(IMAGE, _SENT)]
    for seq, (name, spoiled, dt) in enumerate(events, start=2):
        fields: dict[str, Any] = {**_VALID[name], **spoiled}
        records.append(EfdRecord(Measurement("Camera", Kind.EVENT, name), 1, seq, _SENT + dt,
                                 _SENT + dt, fields))  # fmt: skip
    for seq, (name, fields, dt) in enumerate(samples):
        csc, index = ("Weather", 0) if name == "weather" else ("Telescope", 1)
        kind = Kind.EVENT if name in ("target", "filter") else Kind.TELEMETRY
        records.append(EfdRecord(Measurement(csc, kind, name), index, seq, _SENT + dt,
                                 _SENT + dt, fields))  # fmt: skip
    store.write(records)
    headers = EfdHeaders(store, camera_for_index(1), 1, RULES, tmp_path / "h",
                         generator="HeaderService:1", version="0")  # fmt: skip
    outcome = headers.rebuild(IMAGE)
    assert outcome.status in ("rebuilt", "not-ended", "unchanged")
    if outcome.status == "rebuilt":
        document = parse_header_document(headers.path(IMAGE).read_bytes())
        assert {c.keyword: c.value for c in document.primary}["HDRSRC"] == "EFD"


def test_outcomes_without_a_rebuild(tmp_path: Path) -> None:
    store = MemoryStore()
    sent = _SENT
    store.write([_start_record(IMAGE, sent)])
    headers = EfdHeaders(store, camera_for_index(1), 1, RULES, tmp_path / "h",
                         generator="HeaderService:1", version="0")  # fmt: skip
    assert headers.rebuild("AT_O_20261121_000043").status == "not-in-efd"
    assert headers.rebuild(IMAGE).status == "not-ended"  # the writer has not written it yet
    end = {"imageName": IMAGE, "timestampDateObs": sent, "timestampDateEnd": sent + 1,
           "exposureTime": 1.0, "darkTime": 1.0, "measuredShutterOpenTime": 1.0}  # fmt: skip
    store.write([EfdRecord(Measurement("Camera", Kind.EVENT, "endOfImageTelemetry"), 1, 1,
                           sent + 2, sent + 2, flatten_fields(end))])  # fmt: skip
    first = headers.rebuild(IMAGE)
    assert first.status == "rebuilt"
    # Nothing in the EFD for the keyword map: every mapped keyword missing, with why.
    assert "RA" in first.detail.split(",")
    written = headers.path(IMAGE).read_bytes()
    again = headers.rebuild(IMAGE)  # the EFD has nothing more: not written again
    assert again.status == "unchanged"
    assert headers.path(IMAGE).read_bytes() == written


def test_absurd_times_and_positions_are_missing_never_a_crash() -> None:
    """Found by the hostile test above, and as true of the live path: a time astropy
    cannot take, or a declination beyond a pole, is a missing keyword with its reason."""
    record = _start_record(IMAGE, _SENT)
    start = StartIntegration.model_validate(record.fields)
    end = {"imageName": IMAGE, "timestampDateObs": -2.2e11, "timestampDateEnd": _SENT,
           "exposureTime": 1.0, "darkTime": 1.0, "measuredShutterOpenTime": 1.0}  # fmt: skip
    collected: dict[str, Value | Missing] = {"RA": Value(10.0), "DEC": Value(91.0),
                                             "ROTPA": Value(0.0)}  # fmt: skip
    absurd = dict(
        derived_keywords(Camera.LATISS, start, EndOfImageTelemetry.model_validate(end), collected)
    )
    assert isinstance(absurd["DATE-OBS"], Missing)
    assert "times unusable" in absurd["DATE-OBS"].reason
    assert absurd["EXPTIME"] == Value(1.0, "s", "requested exposure time")
    fine = EndOfImageTelemetry.model_validate(end | {"timestampDateObs": _SENT - 1})
    beyond = dict(derived_keywords(Camera.LATISS, start, fine, collected))
    assert isinstance(beyond["AIRMASS"], Missing)
    assert "DEC 91 is not a declination" in beyond["AIRMASS"].reason
    pointing = mid_exposure_pointing(collected)
    assert isinstance(pointing, Missing)
    assert "not a declination" in pointing.reason
