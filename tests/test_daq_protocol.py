"""The DAQ server and client over real ZeroMQ sockets: reads, hostile requests, faults.

Every fault is checked as the archiver will see it: an exception naming the image, the
sensor and the cause, never pixels that differ from what the camera stored.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytest_asyncio
import zmq
import zmq.asyncio
from hypothesis import given
from hypothesis import strategies as st

from cscs.camera.geometry import Camera
from cscs.daq import protocol
from cscs.daq.client import DaqClient
from cscs.daq.errors import (
    ChecksumMismatchError,
    DaqUnavailableError,
    ImageEvictedError,
    SensorMissingError,
    StreamStalledError,
    UnknownImageError,
    UnknownSensorError,
)
from cscs.daq.protocol import (
    MAGIC,
    MAX_READS_PER_CLIENT,
    Read,
    RequestError,
    parse_reply,
    parse_request,
)
from sim.daq.faults import FaultKind, FaultRule
from sim.daq.pixels import ElectronicsModel, Scene, synthesize_sensor
from sim.daq.server import DaqServer
from sim.daq.store import DaqStore, SensorData

LATISS = "AT_O_20261121_000001"
COMCAM = "CC_O_20261121_000001"
COMCAM_SENSORS = ["R22_S00", "R22_S11", "R22_S22"]


@pytest.fixture(scope="module")
def store_images() -> dict[tuple[str, str], SensorData]:
    model = ElectronicsModel()
    data = {}
    for image, camera, sensors in (
        (LATISS, Camera.LATISS, ["R00_S00"]),
        (COMCAM, Camera.COMCAM, COMCAM_SENSORS),
    ):
        scene = Scene("FLAT", 1.0, 1.0, seed=hash(image) & 0xFFFF)
        for sensor in sensors:
            segments = synthesize_sensor(model, scene, camera.detector(sensor))
            data[image, sensor] = SensorData.from_segments(segments)
    return data


@pytest_asyncio.fixture(params=["tcp", "ipc"])
async def server(
    request: pytest.FixtureRequest,
    store_images: dict[tuple[str, str], SensorData],
    tmp_path: Path,
) -> AsyncIterator[DaqServer]:
    store = DaqStore(2 * 10**9)
    for image in (LATISS, COMCAM):
        sensors = [s for (i, s) in store_images if i == image]
        store.begin_image(image, [*sensors, "R22_S01"] if image == COMCAM else sensors, {"x": 1})
        for sensor in sensors:
            store.put_sensor(image, sensor, store_images[image, sensor])
        if image == COMCAM:
            store.mark_missing(image, "R22_S01")
        store.end_image(image)
    endpoint = "tcp://127.0.0.1:*" if request.param == "tcp" else f"ipc://{tmp_path}/daq.sock"
    async with DaqServer(store, [endpoint]) as running:
        yield running


@pytest_asyncio.fixture
async def client(server: DaqServer) -> AsyncIterator[DaqClient]:
    async with DaqClient(server.endpoints[0], timeout=5.0, stall_timeout=0.5) as connected:
        yield connected


def same_pixels(got: object, stored: SensorData) -> bool:
    from cscs.daq.reader import SensorPixels

    assert isinstance(got, SensorPixels)
    return got.datasums == stored.datasums and all(
        np.array_equal(a, b) for a, b in zip(got.segments, stored.segments, strict=True)
    )


async def test_list_info_and_read_every_sensor(
    client: DaqClient, store_images: dict[tuple[str, str], SensorData]
) -> None:
    images = await client.list_images()
    assert [i.name for i in images] == [LATISS, COMCAM]  # oldest first
    info = await client.image_info(COMCAM)
    assert info.sensors == (*COMCAM_SENSORS, "R22_S01")
    assert info.missing_sensors == ("R22_S01",)
    assert info.complete
    assert info.metadata == {"x": 1}
    for (image, sensor), stored in store_images.items():
        got = await client.read_sensor(image, sensor)
        assert (got.image, got.sensor) == (image, sensor)
        assert same_pixels(got, stored)
        assert not got.segments[0].flags.writeable


async def test_many_concurrent_readers(
    server: DaqServer, store_images: dict[tuple[str, str], SensorData]
) -> None:
    async def reader() -> bool:
        async with DaqClient(server.endpoints[0], timeout=10.0, stall_timeout=10.0) as c:
            results = await asyncio.gather(*(c.read_sensor(i, s) for (i, s) in store_images))
        return all(same_pixels(r, store_images[r.image, r.sensor]) for r in results)

    assert all(await asyncio.gather(*(reader() for _ in range(4))))


async def test_errors_name_image_sensor_and_cause(client: DaqClient) -> None:
    with pytest.raises(UnknownImageError, match="image AT_O_20261121_000099 sensor R00_S00: no"):
        await client.read_sensor("AT_O_20261121_000099", "R00_S00")
    with pytest.raises(UnknownSensorError, match=f"image {COMCAM} sensor R00_S00: not a sensor"):
        await client.read_sensor(COMCAM, "R00_S00")
    with pytest.raises(SensorMissingError, match=f"image {COMCAM} sensor R22_S01: .*not read"):
        await client.read_sensor(COMCAM, "R22_S01")
    with pytest.raises(UnknownImageError, match="no such image"):
        await client.image_info("AT_O_20261121_000099")


@pytest.mark.parametrize(
    ("rule", "error", "message"),
    [
        (FaultRule(kind=FaultKind.DROP), StreamStalledError, "pixels did not follow"),
        (
            FaultRule(kind=FaultKind.CORRUPT, segment=5),
            ChecksumMismatchError,
            "segment Segment15 is corrupt",
        ),
        (FaultRule(kind=FaultKind.SLOW, delay=0.2), StreamStalledError, "link dropped or"),
        (FaultRule(kind=FaultKind.EVICT), ImageEvictedError, "evicted from the DAQ buffer"),
    ],
    ids=["drop", "corrupt", "slow-past-timeout", "evict"],
)
async def test_each_fault_is_a_clear_error_never_wrong_pixels(
    server: DaqServer,
    client: DaqClient,
    store_images: dict[tuple[str, str], SensorData],
    rule: FaultRule,
    error: type[Exception],
    message: str,
) -> None:
    server.faults.add(rule.model_copy(update={"image": COMCAM, "sensor": "R22_S11"}))
    with pytest.raises(error, match=f"image {COMCAM} sensor R22_S11: .*{message}"):
        # A corrupt segment arrives: the sums it came with find it, where it is used.
        (await client.read_sensor(COMCAM, "R22_S11")).verify()
    # Other sensors are untouched, and (unless evicted) a retry reads the right pixels.
    if rule.kind is FaultKind.EVICT:
        with pytest.raises(ImageEvictedError):
            await client.read_sensor(COMCAM, "R22_S00")
    else:
        got = await client.read_sensor(COMCAM, "R22_S11")
        assert same_pixels(got, store_images[COMCAM, "R22_S11"])


async def test_a_slow_link_within_the_timeout_still_delivers(
    server: DaqServer, client: DaqClient, store_images: dict[tuple[str, str], SensorData]
) -> None:
    server.faults.add(FaultRule(kind=FaultKind.SLOW, delay=0.01, count=0))
    got = await client.read_sensor(LATISS, "R00_S00")
    assert same_pixels(got, store_images[LATISS, "R00_S00"])


async def test_no_daq_is_unavailable_not_a_hang(tmp_path: Path) -> None:
    async with DaqClient(f"ipc://{tmp_path}/nobody.sock", timeout=0.3) as lonely:
        with pytest.raises(DaqUnavailableError, match="no answer from the DAQ at ipc://"):
            await lonely.read_sensor(LATISS, "R00_S00")
        with pytest.raises(DaqUnavailableError):
            await lonely.list_images()


HOSTILE: list[list[bytes]] = [
    [b"garbage"],
    [b"NOPE", b"{}"],
    [MAGIC],
    [MAGIC, b"{}", b"extra", b"frames"],
    [MAGIC, b"\xff\xfe not utf-8"],
    [MAGIC, b"[1, 2, 3]"],
    [MAGIC, b'{"op": "list"}'],
    [MAGIC, b'{"op": "list", "id": -1}'],
    [MAGIC, b'{"op": "list", "id": true}'],
    [MAGIC, b'{"op": "explode", "id": 1}'],
    [MAGIC, b'{"op": "read", "id": 2, "image": "AT_O_20261121_000001"}'],
    [MAGIC, b'{"op": "read", "id": 3, "sensor": "R00_S00"}'],
    [MAGIC, b'{"op": "info", "id": 4, "image": 17}'],
    [MAGIC, b"{" + b" " * 60_000 + b"}"],  # too long, but under the frame limit
    [MAGIC, b"[" * 4000],  # json would recurse past Python's limit
    [MAGIC, b'{"op": "list", "id": 1' + b"0" * 3000 + b"}"],
    [MAGIC, b'{"op": "info", "id": 5, "image": "CC\nO"}'],
]


async def test_hostile_requests_get_error_replies_and_the_server_keeps_serving(
    server: DaqServer,
) -> None:
    socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    socket.connect(server.endpoints[0])
    try:
        for frames in HOSTILE:
            await socket.send_multipart(frames)
            reply = await asyncio.wait_for(socket.recv_multipart(), 5.0)
            body = json.loads(reply[1])
            assert reply[0] == MAGIC, frames
            assert body["ok"] is False, frames
            assert body["code"] == "bad-request", body
            assert body["message"], body
        await socket.send_multipart([MAGIC, b'{"op": "list", "id": 9}'])
        body = json.loads((await asyncio.wait_for(socket.recv_multipart(), 5.0))[1])
        assert body["ok"]
        assert body["id"] == 9
        assert server.stats.bad_requests == len(HOSTILE)
    finally:
        socket.close(linger=0)


async def test_flow_control_bounds_reads_in_flight_per_client(server: DaqServer) -> None:
    """A client that asks for far more than it reads is told `busy`: the server never
    holds more than MAX_READS_PER_CLIENT of its replies."""
    socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.RCVHWM, 1)
    socket.setsockopt(zmq.RCVBUF, 65536)
    socket.connect(server.endpoints[0])
    asked = 3 * MAX_READS_PER_CLIENT
    try:
        for n in range(asked):
            request = {"op": "read", "id": n, "image": LATISS, "sensor": "R00_S00"}
            await socket.send_multipart([MAGIC, json.dumps(request).encode()])
        outcomes: dict[str, int] = {}
        answered: set[int] = set()
        while len(answered) < asked:
            reply = await asyncio.wait_for(socket.recv_multipart(copy=False), 10.0)
            body = json.loads(reply[1].bytes)
            kind = body.get("kind") or body.get("code")
            outcomes[kind] = outcomes.get(kind, 0) + 1
            if kind in ("data", "busy"):
                answered.add(body["id"])
        assert outcomes.get("busy", 0) >= 1
        assert outcomes["begin"] == outcomes["data"] == asked - outcomes["busy"]
        assert server.stats.max_in_flight <= MAX_READS_PER_CLIENT
    finally:
        socket.close(linger=0)


@given(frames=st.lists(st.binary(max_size=300), max_size=5))
def test_parse_request_never_fails_unexpectedly(frames: list[bytes]) -> None:
    try:
        request = parse_request(frames)
    except RequestError as exc:
        message = str(exc)
        assert message
        return
    assert request.op in ("list", "info", "read", "cancel")
    if isinstance(request, Read):
        assert request.image
        assert request.sensor


@given(
    body=st.dictionaries(
        st.sampled_from(["op", "id", "image", "sensor", "n"]),
        st.one_of(
            st.integers(),
            st.text(max_size=20),
            st.booleans(),
            st.none(),
            st.sampled_from(["list", "info", "read", "cancel"]),
        ),
    )
)
def test_parse_request_on_arbitrary_json_objects(body: dict[str, object]) -> None:
    try:
        parse_request([MAGIC, json.dumps(body).encode()])
    except RequestError as exc:
        message = str(exc)
        assert message


async def test_an_endpoint_in_use_is_a_clear_error(server: DaqServer) -> None:
    taken = server.endpoints[0]
    with pytest.raises(OSError, match=f"DAQ server cannot bind {taken}"):
        DaqServer(DaqStore(2 * 10**9), [taken])


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([MAGIC, b"[" * 4000], "opens more than"),  # json would raise RecursionError
        ([MAGIC, b'{"a":' * 500 + b"1" + b"}" * 500], "opens more than"),
        ([MAGIC, b'{"op": "list", "id": ' + b"7" * 4000 + b"}"], "'id' must be below"),
        ([MAGIC, b'{"op": "list", "id": 1e999999}'], "'id' must be a non-negative"),
        ([MAGIC, b"\xc3\x28 not utf-8"], "not UTF-8"),
        ([MAGIC, b'"just a string"'], "must be a JSON object, got str"),
        ([MAGIC, b"null"], "must be a JSON object, got NoneType"),
        ([MAGIC, b"NaN"], "must be a JSON object, got float"),
        ([MAGIC, b'{"op": "info", "id": 1, "image": "CC\\u0000O"}'], "printable ASCII"),
        ([MAGIC, b'{"op": "info", "id": 1, "image": "\\ud800"}'], "printable ASCII"),
        ([MAGIC, b'{"op": "read", "id": 1, "image": "CC", "sensor": "R\\u00e9"}'], "ASCII"),
        ([MAGIC, b'{"op": "info", "id": 1, "image": "' + b"C" * 129 + b'"}'], "at most 128"),
        ([MAGIC, b'{"op": {"nested": [1]}, "id": 1}'], "unknown op ?"),
        ([b"DAQ", b"{}"], "expected 2 frames"),
    ],
)
def test_every_failure_to_decode_is_a_request_error(frames: list[bytes], reason: str) -> None:
    with pytest.raises(RequestError, match=re.escape(reason)):
        parse_request(frames)


def test_brackets_inside_strings_are_not_nesting() -> None:
    image = "[{" * 30
    request = parse_request([MAGIC, json.dumps({"op": "info", "id": 1, "image": image}).encode()])
    assert request.image == image


def test_frames_may_be_memoryviews_and_are_not_copied_when_too_long() -> None:
    big = memoryview(bytearray(10**7))
    with pytest.raises(RequestError, match="exceeds 4096"):
        parse_request([memoryview(MAGIC), big])
    assert parse_request([memoryview(MAGIC), memoryview(b'{"op":"list","id":3}')]).id == 3


@pytest.mark.parametrize("error", [MemoryError, RecursionError, OverflowError, KeyError])
def test_whatever_json_raises_is_a_request_error(
    monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    def loads(text: str) -> object:
        raise error

    fake = SimpleNamespace(loads=loads, dumps=json.dumps, JSONDecodeError=json.JSONDecodeError)
    monkeypatch.setattr(protocol, "json", fake)
    with pytest.raises(RequestError, match=f"not UTF-8 JSON: {error.__name__}"):
        parse_request([MAGIC, b'{"op": "list", "id": 1}'])


def test_a_garbled_reply_is_a_value_error_for_the_client() -> None:
    with pytest.raises(ValueError, match="not JSON: RecursionError"):
        parse_reply([MAGIC, b"[" * 100_000])
    with pytest.raises(ValueError, match="not a DAQ reply"):
        parse_reply([b"DAQ2", b"{}"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=40,
)


@given(value=JSON, op=st.sampled_from(["list", "info", "read", "cancel"]))
def test_parse_request_on_arbitrary_json(value: object, op: str) -> None:
    for body in (value, {"op": op, "id": 1, "image": value, "sensor": value}):
        message = ""
        try:
            parse_request([MAGIC, json.dumps(body).encode()])
        except RequestError as exc:  # nothing else may come out
            message = str(exc)
            assert message
