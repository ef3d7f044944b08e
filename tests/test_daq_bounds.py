"""What a DAQ sends is bounded before the archiver keeps it (issue 29, items 4 and 5):
listings capped and de-duplicated, error text cut short and printable, frames beyond
the protocol's largest refused unread, unsolicited errors logged once; and on the bus,
an event too big to parse dropped unparsed. Pure logic, and a DaqClient against a
hostile ZeroMQ server in this process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

import cscs.core.remote
from cscs.archiver.catchup import CatchUp
from cscs.archiver.interface import retrieval_failed
from cscs.camera.geometry import Camera
from cscs.core.logs import Throttle
from cscs.core.protocol import MAX_EVENT_BYTES, encode
from cscs.core.remote import Received
from cscs.core.text import peer_text
from cscs.core.transport import Message
from cscs.daq.client import DaqClient
from cscs.daq.errors import DaqError, DaqUnavailableError
from cscs.daq.reader import ImageInfo, SensorPixels
from cscs.daq.replies import (
    MAX_FRAME_BYTES,
    MAX_LISTED_IMAGES,
    MAX_MESSAGE_CHARS,
    error_text,
    read_listing,
)
from sim.daq.hostile import HostileDaq, listing

NASTY = "\x1b[2J\nforged line\r\x00" * 1000


def entry(name: str, *sensors: str) -> dict[str, Any]:
    return {"name": name, "sensors": list(sensors), "complete": True, "byteSize": 1}


# ---- listings ------------------------------------------------------------------------


def test_a_listing_names_each_image_once_and_is_capped() -> None:
    images = [entry(f"AT_O_20261207_{n:06d}", "R00_S00", "R00_S00") for n in range(5000)]
    got = read_listing({"images": images + images[:10]})
    assert len(got.images) == MAX_LISTED_IMAGES
    assert [i.name for i in got.images][:2] == ["AT_O_20261207_000000", "AT_O_20261207_000001"]
    assert got.images[0].sensors == ("R00_S00",)  # each sensor once
    assert (got.listed, got.duplicates, got.beyond_limit) == (5010, 10, 5000 - MAX_LISTED_IMAGES)


def test_entries_that_are_not_images_are_skipped_and_counted() -> None:
    bad: list[object] = [
        "x", None, [], entry("A" * 10_000, "R00_S00"), entry("AT\nx", "R00_S00"),
        entry("AT_O_1", *["R00_S00"] * 1000), entry("AT_O_2", NASTY),
        {**entry("AT_O_3"), "byteSize": -1}, {**entry("AT_O_4"), "complete": "yes"},
        {**entry("AT_O_5"), "sensors": "R00_S00"}, {"name": "AT_O_6"},
    ]  # fmt: skip
    got = read_listing({"images": [*bad, entry("AT_O_7", "R00_S00")]})
    assert [i.name for i in got.images] == ["AT_O_7"]
    assert got.unreadable == len(bad)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4)))  # fmt: skip
def test_no_listing_makes_the_reader_raise_anything_but_value_error(images: object) -> None:
    try:
        got = read_listing({"images": images})
    except ValueError:
        return
    assert all(isinstance(i, ImageInfo) for i in got.images)


# ---- a peer's text -----------------------------------------------------------------------


def test_a_peers_error_text_is_bounded_and_printable() -> None:
    code, message = error_text({"code": NASTY, "message": NASTY * 200})
    assert len(message) < MAX_MESSAGE_CHARS + 40
    assert message.isprintable()
    assert f"({len(NASTY) * 200} characters)" in message
    assert len(code) < 80
    assert code.isprintable()
    assert error_text({"code": None, "message": {"a": 1}}) == ("None", "no reason given")


def test_a_five_megabyte_reason_makes_a_small_retrieval_failed_event() -> None:
    event = retrieval_failed("AT_O_20261207_000001", {"R00_S00": "x" * 5_000_000})
    assert len(encode(event.model_dump())) < 1000


def test_peer_text_leaves_plain_short_text_alone() -> None:
    assert peer_text("image AT_O_1: evicted") == "image AT_O_1: evicted"


# ---- events too big to parse ---------------------------------------------------------------


def test_an_event_over_the_limit_is_dropped_unparsed_with_one_bounded_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The throttle is the process's: a line another test made in the last 10 s would
    # keep this one quiet.
    monkeypatch.setattr(cscs.core.remote, "_oversized_throttle", Throttle())
    topic = "lsst/Archiver/1/evt/imageArchived" + "/x" * 10_000
    payload = encode({"seq": 1, "sent_tai": 1.0, "pad": "x" * MAX_EVENT_BYTES})
    with capture_logs() as logs:
        received = Received.from_message(Message(topic, payload))
    assert received is None
    (line,) = [log for log in logs if log["event"] == "message too big to parse: dropped"]
    assert line["bytes"] == len(payload)
    assert line["limit"] == MAX_EVENT_BYTES
    assert line["topic"].startswith("lsst/Archiver/1/evt/imageArchived")
    assert len(line["topic"]) < 250


def test_an_event_under_the_limit_is_read() -> None:
    payload = encode({"seq": 1, "sent_tai": 1.0, "pad": "x" * 100_000})
    received = Received.from_message(Message("lsst/Archiver/1/evt/imageArchived", payload))
    assert received is not None
    assert received.name == "imageArchived"


# ---- a DaqClient against a hostile server ----------------------------------------------------


@pytest.fixture
def hostile() -> Iterator[HostileDaq]:
    daq = HostileDaq(listing(3, "AT_O_20261207", "R00_S00", repeat=2), NASTY * 30).start()
    yield daq
    daq.close()


@pytest_asyncio.fixture
async def client(hostile: HostileDaq) -> AsyncIterator[DaqClient]:
    async with DaqClient(hostile.endpoint, timeout=1.0) as daq:
        yield daq


async def test_a_listing_with_repeats_comes_back_once_each(client: DaqClient) -> None:
    with capture_logs() as logs:
        images = await client.list_images()
    assert [i.name for i in images] == [f"AT_O_20261207_{n:06d}" for n in range(3)]
    assert [log["duplicates"] for log in logs if "trimmed" in log["event"]] == [3]


async def test_a_huge_error_message_becomes_a_short_printable_cause(client: DaqClient) -> None:
    with pytest.raises(DaqError) as raised:
        await client.read_sensor("AT_O_20261207_000001", "R00_S00")
    assert raised.value.code == "unknown-image"
    assert len(str(raised.value)) < 500
    assert str(raised.value).isprintable()


async def test_unsolicited_errors_are_logged_once_and_bounded(
    hostile: HostileDaq, client: DaqClient
) -> None:
    await client.list_images()  # the server now knows this client
    error = json.dumps({"id": 999, "ok": False, "code": "x", "message": NASTY * 30}).encode()
    with capture_logs() as logs:
        for _ in range(10):
            hostile.push([error])
        await client.list_images()  # sent after the pushes: they have all been handled
        await client.list_images()
    said = [log for log in logs if log["event"] == "DAQ error for no request"]
    assert len(said) == 1
    assert sum(len(str(v)) for v in said[0].values()) < 1000


async def test_a_frame_beyond_the_protocols_largest_is_refused_unread() -> None:
    huge = listing(MAX_FRAME_BYTES // 60 + 1000, "AT_O_20261207", "R00_S00")
    assert len(huge) > MAX_FRAME_BYTES
    daq = HostileDaq(huge).start()
    try:
        async with DaqClient(daq.endpoint, timeout=1.0) as client:
            with pytest.raises(DaqUnavailableError, match=f"over {MAX_FRAME_BYTES} bytes"):
                await client.list_images()
            # ZeroMQ never reconnects after refusing a frame: the client does.
            daq.list_reply = listing(1, "AT_O_20261207", "R00_S00")
            assert [i.name for i in await client.list_images()] == ["AT_O_20261207_000000"]
    finally:
        daq.close()
    assert daq.listed.is_set()  # it was sent, and not taken


# ---- catch-up ---------------------------------------------------------------------------------


class Listed:
    endpoint = "fake"

    def __init__(self, images: list[ImageInfo]) -> None:
        self.images = images

    async def list_images(self) -> list[ImageInfo]:
        return self.images

    async def read_sensor(self, image: str, sensor: str) -> SensorPixels:
        raise AssertionError("not read here")

    async def close(self) -> None:
        pass


class NoStore:
    def archived_sensors(self, names: list[str]) -> dict[str, set[str]]:
        return {}

    def without_header(self) -> list[Any]:
        return []


async def test_a_long_listing_is_caught_up_in_a_few_log_lines() -> None:
    images = [ImageInfo(f"AT_O_20261207_{n:06d}", ("R00_S00",), (), True, 1, {})
              for n in range(MAX_LISTED_IMAGES)]  # fmt: skip
    images += [ImageInfo("XX_O_1", ("R00_S00",), (), True, 1, {})] * 1000  # not ours

    async def archive(image: str, sensor: str, wait: float) -> bool:
        await asyncio.sleep(0)
        return True

    async def complete(image: str) -> None:
        pass

    with capture_logs() as logs:
        catch_up = CatchUp(Camera(1), None, archive, complete, structlog.get_logger())  # type: ignore[arg-type]
        done = await catch_up.run(Listed(images), NoStore(), 4)  # type: ignore[arg-type]
    assert done == (MAX_LISTED_IMAGES, 0)
    assert len(logs) <= 25, [log["event"] for log in logs][:5]
