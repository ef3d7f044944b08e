"""The Camera CSC on a real broker: ICD §5 events, image names, the DAQ behind it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cscs.core.protocol import Ack, AckCode
from cscs.core.remote import EventStream, Received
from cscs.core.settings import Settings
from cscs.core.testing import CscHarness, check_standard_state_transitions, make_csc
from cscs.core.transport import Connector
from cscs.daq.client import DaqClient
from cscs.daq.errors import ChecksumMismatchError, ImageEvictedError, SensorMissingError
from sim.daq.camera import CameraCsc

PACKAGE_CONFIG = Path(__file__).parents[1] / "sim" / "daq" / "config"
SEQUENCE = ("startIntegration", "startReadout", "endReadout", "endOfImageTelemetry")


@contextlib.asynccontextmanager
async def camera(
    broker: Connector,
    prefix: str,
    state_dir: Path,
    index: int = 1,
    config_dir: Path | None = None,
) -> AsyncIterator[CscHarness]:
    settings = Settings(prefix=prefix, state_dir=state_dir, config_dir=config_dir)
    async with make_csc(CameraCsc, broker, index=index, settings=settings) as harness:
        yield harness


async def enable(harness: CscHarness, override: str = "fast") -> None:
    await harness.remote.command("start", {"configurationOverride": override})
    await harness.remote.command("enable")


async def collect(events: EventStream, count: int) -> list[Received]:
    """The next ``count`` camera image events, in arrival order."""
    received: list[Received] = []
    while len(received) < count:
        event = await events.next(30)
        if event.name in SEQUENCE:
            received.append(event)
    return received


TAKE = {"numImages": 2, "expTime": 0.3, "shutter": True, "imageType": "OBJECT",
        "groupId": "g1", "keyValueMap": "reason:test, program:BLOCK-1"}  # fmt: skip


async def test_standard_state_transitions(broker: Connector, index: int, tmp_path: Path) -> None:
    async with camera(broker, f"t{index}", tmp_path) as h:
        await check_standard_state_transitions(h.remote, {"takeImages": TAKE})


async def test_take_images_publishes_the_icd_sequence_with_pixels_ready(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    async with camera(broker, f"t{index}", tmp_path) as h:
        await enable(h)
        daq = await h.remote.next_event("daqAvailable")
        async with h.remote.stream() as events:
            ack = await h.remote.command("takeImages", TAKE, timeout=30)
            received = await collect(events, 8)
        assert "took 2 image(s)" in ack.result
        assert [e.name for e in received] == list(SEQUENCE) * 2
        first, second = received[0].data, received[4].data
        day = first["imageDate"]
        assert first["imageName"] == f"AT_O_{day}_{first['imageNumber']:06d}"
        assert second["imageNumber"] == first["imageNumber"] + 1
        assert (first["imageIndex"], second["imageIndex"], first["imagesInSequence"]) == (1, 2, 2)
        assert (first["imageSource"], first["imageController"]) == ("AT", "O")
        assert (first["additionalKeys"], first["additionalValues"]) == (
            "reason:program",
            "test:BLOCK-1",
        )
        assert first["timeout"] > TAKE["expTime"]
        start, readout, end, telemetry = (e.data for e in received[:4])
        assert {e["imageName"] for e in (readout, end, telemetry)} == {first["imageName"]}
        assert start["timestampAcquisitionStart"] <= readout["timestampStartOfReadout"]
        assert readout["timestampStartOfReadout"] <= end["timestampEndOfReadout"]
        assert readout["timestampStartOfReadout"] - start["timestampAcquisitionStart"] >= 0.3
        assert telemetry["exposureTime"] == 0.3
        assert telemetry["darkTime"] >= 0.3
        assert end["sensors"] == "R00_S00"
        # endReadout means the pixels are already in the DAQ buffer.
        async with DaqClient(daq.data["url"].split(",")[0]) as client:
            info = await client.image_info(first["imageName"])
            assert info.complete
            assert info.metadata["imageType"] == "OBJECT"
            assert info.metadata["groupId"] == "g1"
            pixels = await client.read_sensor(first["imageName"], "R00_S00")
            assert len(pixels.segments) == 16


async def test_image_numbers_survive_a_restart(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    one = {**TAKE, "numImages": 1, "expTime": 0.0, "imageType": "BIAS", "shutter": False}
    names = []
    for _ in range(2):
        async with camera(broker, f"t{index}", tmp_path) as h:
            await enable(h)
            async with h.remote.stream("startIntegration") as events:
                await h.remote.command("takeImages", one, timeout=30)
                names.append((await events.next()).data)
    assert names[1]["imageNumber"] == names[0]["imageNumber"] + 1
    assert names[1]["imageName"] != names[0]["imageName"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"imageType": "BIAS", "shutter": False}, "a BIAS has expTime 0"),
        ({"imageType": "DARK"}, "a DARK needs the shutter closed"),
        ({"imageType": "SKYFLAT"}, "imageType 'SKYFLAT' is not one of"),
        ({"keyValueMap": "reason=test"}, "keyValueMap item 'reason=test' must be key:value"),
        ({"numImages": 0}, "parameter 'numImages'"),
        ({"expTime": -1.0}, "parameter 'expTime'"),
    ],
)
async def test_bad_take_images_are_refused_naming_the_cause(
    broker: Connector, index: int, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    async with camera(broker, f"t{index}", tmp_path) as h:
        await enable(h)
        ack = await h.remote.command("takeImages", {**TAKE, **change}, check=False)
        assert ack.code is AckCode.FAILED
        assert message in ack.result


@contextlib.asynccontextmanager
async def exposing(h: CscHarness, params: dict[str, Any]) -> AsyncIterator[asyncio.Task[Ack]]:
    """A takeImages running in the background, once its first exposure has begun."""
    async with h.remote.stream("startIntegration") as events:
        task = asyncio.create_task(h.remote.command("takeImages", params, check=False))
        await events.next()
        yield task


async def test_a_second_take_images_while_busy_is_refused(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    async with camera(broker, f"t{index}", tmp_path) as h:
        await enable(h)
        async with exposing(h, {**TAKE, "numImages": 1, "expTime": 1.0}) as first:
            ack = await h.remote.command("takeImages", TAKE, check=False)
            assert ack.code is AckCode.FAILED
            assert "busy" in ack.result
            assert (await first).code is AckCode.COMPLETE


async def test_disable_aborts_a_sequence(broker: Connector, index: int, tmp_path: Path) -> None:
    async with camera(broker, f"t{index}", tmp_path) as h:
        await enable(h)
        async with exposing(h, {**TAKE, "numImages": 5, "expTime": 5.0}) as taking:
            await h.remote.command("disable")
            assert (await taking).code is AckCode.ABORTED


async def test_injected_missing_sensor_reaches_the_reader(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    async with camera(broker, f"t{index}", tmp_path, index=2) as h:
        await enable(h)
        await h.remote.command(
            "injectFault", {"kind": "missing", "sensor": "R22_S11", "image": "CC_*"}
        )
        daq = await h.remote.next_event("daqAvailable")
        async with h.remote.stream("endReadout") as events:
            bias = {**TAKE, "numImages": 1, "expTime": 0.0, "imageType": "BIAS", "shutter": False}
            await h.remote.command("takeImages", bias, timeout=60)
            end = (await events.next(30)).data
        assert end["sensors"].split(",") == [f"R22_S{x}{y}" for x in range(3) for y in range(3)]
        async with DaqClient(daq.data["url"]) as client:
            info = await client.image_info(end["imageName"])
            assert info.missing_sensors == ("R22_S11",)
            with pytest.raises(SensorMissingError, match=f"{end['imageName']} sensor R22_S11"):
                await client.read_sensor(end["imageName"], "R22_S11")
            pixels = await client.read_sensor(end["imageName"], "R22_S12")
            assert len(pixels.segments) == 16


async def test_faults_from_configuration(broker: Connector, index: int, tmp_path: Path) -> None:
    config = tmp_path / "config" / "Camera"
    shutil.copytree(PACKAGE_CONFIG, config)
    (config / "corrupting.yaml").write_text(
        "readout_time: 0.1\nfaults:\n  - {kind: corrupt, segment: 3, count: 0}\n"
    )
    async with camera(broker, f"t{index}", tmp_path, config_dir=tmp_path / "config") as h:
        await enable(h, "corrupting")
        daq = await h.remote.next_event("daqAvailable")
        async with h.remote.stream("endReadout") as events:
            bias = {**TAKE, "numImages": 1, "expTime": 0.0, "imageType": "BIAS", "shutter": False}
            await h.remote.command("takeImages", bias, timeout=30)
            name = (await events.next(30)).data["imageName"]
        async with DaqClient(daq.data["url"]) as client:
            with pytest.raises(ChecksumMismatchError, match="segment Segment13 is corrupt"):
                (await client.read_sensor(name, "R00_S00")).verify()
        await h.remote.command("clearFaults")
        async with DaqClient(daq.data["url"]) as client:
            (await client.read_sensor(name, "R00_S00")).verify()


async def test_lsstcam_that_does_not_fit_the_buffer_is_refused_at_start(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    async with camera(broker, f"t{index}", tmp_path, index=3) as h:
        ack = await h.remote.command("start", {"configurationOverride": ""}, check=False)
        assert ack.code is AckCode.FAILED
        assert "LSSTCam image of 189 sensors is 14.3 GB" in ack.result
        assert "raise store_bytes or list fewer sensors" in ack.result
        await h.remote.command("start", {"configurationOverride": "lsstcam_raft22.yaml"})


async def test_lsstcam_reads_the_rafts_it_is_configured_for(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    """The benchmark's three rafts: 27 CCDs, each raft's nine; a raft LSSTCam does not
    have is refused, naming the ones it has."""
    async with camera(broker, f"t{index}", tmp_path, index=3) as h:
        await h.remote.command("start", {"configurationOverride": "lsstcam_3rafts.yaml"})
        sensors: list[str] = h.csc.sensors  # type: ignore[attr-defined]
        assert len(sensors) == 27
        assert {s.split("_")[0] for s in sensors} == {"R21", "R22", "R23"}
        await h.remote.command("standby")
        config = tmp_path / "config" / "Camera"
        shutil.copytree(PACKAGE_CONFIG, config)
        (config / "bad.yaml").write_text("rafts: [R22, R44]\n")
    async with camera(broker, f"u{index}", tmp_path, index=3, config_dir=config.parent) as h:
        ack = await h.remote.command("start", {"configurationOverride": "bad"}, check=False)
        assert ack.code is AckCode.FAILED
        assert "LSSTCam has no raft 'R44'" in ack.result


async def test_unknown_camera_index_is_refused() -> None:
    with pytest.raises(ValueError, match="camera index must be 1"):
        CameraCsc(4)


async def test_eviction_is_announced_and_seen_by_readers(
    broker: Connector, index: int, tmp_path: Path
) -> None:
    config = tmp_path / "config" / "Camera"
    shutil.copytree(PACKAGE_CONFIG, config)
    (config / "tiny.yaml").write_text("readout_time: 0.1\nstore_bytes: 80000000\n")  # 1 CCD
    async with camera(broker, f"t{index}", tmp_path, config_dir=tmp_path / "config") as h:
        await enable(h, "tiny")
        daq = await h.remote.next_event("daqAvailable")
        bias = {**TAKE, "numImages": 2, "expTime": 0.0, "imageType": "BIAS", "shutter": False}
        async with h.remote.stream("logMessage") as logs, h.remote.stream("endReadout") as ends:
            await h.remote.command("takeImages", bias, timeout=30)
            first = (await ends.next()).data["imageName"]
            log = await logs.wait_for(lambda r: "evicted" in r.data["message"])
        assert first in log.data["message"]
        assert log.data["level"] == 30
        async with DaqClient(daq.data["url"]) as client:
            with pytest.raises(ImageEvictedError, match=f"image {first} sensor R00_S00"):
                await client.read_sensor(first, "R00_S00")
            assert first not in [i.name for i in await client.list_images()]
