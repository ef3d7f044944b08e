"""A stranger on the same broker and network, against every CSC in its own process on
Mosquitto: the eight attacks of issue 13, each followed by what users rely on — the next
image archived and verified, heartbeats throughout (never 3 s of silence, the ICD's
"lost"), memory back to its level, nothing written outside the CSCs' directories, one
final ack per command, and ``cscs ocs status`` telling the truth."""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import pytest
import zmq
import zmq.asyncio
from astropy.io import fits

from cscs.archiver.interface import IMAGE_ARCHIVED, ImageArchived
from cscs.camera.events import START_INTEGRATION
from cscs.camera.headers.document import HeaderCard, HeaderDocument
from cscs.camera.headers.yaml_codec import dump_header_document
from cscs.core.protocol import encode
from cscs.core.remote import EventStream, Remote
from cscs.core.schema import parse_payload
from cscs.core.states import State
from cscs.core.tai import current_tai
from sim.site.night import verify_archived_file
from tests.support.process_site import Heartbeats, ProcessSite, rss_bytes

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]
LOST = 3.0  # s without a heartbeat: a monitor's "lost" (ICD §3)
BIAS = {"numImages": 1, "expTime": 0.0, "shutter": False, "imageType": "BIAS"}


def assert_alive(beats: Heartbeats) -> None:
    silences = beats.longest_silence()
    assert all(s < LOST for s in silences.values()), f"longest silence per CSC: {silences}"


async def settle_rss(pid: int, target: int, timeout: float = 60.0) -> int:
    """The process's RSS once it is back within 20 % of ``target`` (or the last seen)."""
    deadline = time.monotonic() + timeout
    while True:
        rss = rss_bytes(pid)
        if rss <= target * 1.2 or time.monotonic() > deadline:
            return rss
        await asyncio.sleep(0.5)  # polling a measurement, not synchronising


async def daq_request(url: str, frames: list[bytes], timeout: float = 10.0) -> dict[str, Any]:
    context = zmq.asyncio.Context.instance()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(url)
    try:
        await socket.send_multipart(frames)
        async with asyncio.timeout(timeout):
            reply = await socket.recv_multipart()
    finally:
        socket.close()
    assert reply[0] == b"DAQ1"
    body: dict[str, Any] = json.loads(reply[1])
    return body


async def with_next_image(
    site: ProcessSite, meddle: Callable[[str], Awaitable[None]]
) -> tuple[str, list[dict[str, Any]]]:
    """Take a BIAS, calling ``meddle(image)`` as soon as the camera names the image; the
    image's name and every ``imageArchived`` of it until one has its header (statusCode
    0; the header lists missing keywords, as no telescope runs on this site)."""
    camera = Remote(site.bus, site.address("Camera"))
    archiver = Remote(site.bus, site.address("Archiver"))
    async with (
        camera, archiver, camera.events(START_INTEGRATION) as starts,
        archiver.stream(IMAGE_ARCHIVED.name) as archived,
    ):  # fmt: skip
        taking = asyncio.create_task(camera.command("takeImages", BIAS, timeout=90))
        try:
            image = (await starts.next(timeout=30)).data.imageName
            await meddle(image)
            events: list[dict[str, Any]] = []
            while not events or events[-1]["statusCode"] != 0:
                event = await archived.wait_for(lambda r: r.data["imageName"] == image, 90)
                events.append(event.data)
        finally:
            await taking
    return image, events


def primary_header(event: dict[str, Any]) -> fits.Header:
    with fits.open(urlparse(event["url"]).path) as hdus:
        return hdus[0].header.copy()


def document_bytes(image: str, telescope: str) -> bytes:
    card = HeaderCard(keyword="TELESCOP", value=telescope)
    forged = HeaderDocument(
        imageName=image, generator="stranger", version="0", primary=[card],
        detectors={}, segments={}, missing=[],
    )  # fmt: skip
    return dump_header_document(forged)


# ---- 1 and 2: the DAQ socket ---------------------------------------------------------


async def test_1_a_deeply_nested_daq_request_is_answered_and_serving_goes_on(
    process_site_now: ProcessSite,
) -> None:
    site = process_site_now
    url = await site.daq_url()
    async with Heartbeats(site) as beats:
        reply = await daq_request(url, [b"DAQ1", b"[" * 4000])
        assert reply["ok"] is False, reply
        assert reply["code"] == "bad-request", reply
        await site.take_image()
    assert_alive(beats)


async def test_2_a_flood_of_daq_clients_stalls_nothing_and_leaves_no_memory_behind(
    process_site_now: ProcessSite,
) -> None:
    """1500 clients, each sending 8 reads and never reading the replies."""
    site = process_site_now
    url = await site.daq_url()
    image = (await site.take_image()).imageName
    camera = site.pid("Camera")
    before = rss_bytes(camera)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    context = zmq.asyncio.Context()
    context.set(zmq.MAX_SOCKETS, 4096)
    sockets = []
    async with Heartbeats(site) as beats:
        try:
            for n in range(1500):
                socket = context.socket(zmq.DEALER)
                socket.setsockopt(zmq.LINGER, 0)
                socket.connect(url)
                sockets.append(socket)
                for request in range(8):
                    body = {"op": "read", "id": request, "image": image, "sensor": "R00_S00"}
                    await socket.send_multipart([b"DAQ1", encode(body)])
                if n % 100 == 0:
                    await asyncio.sleep(0)  # let the heartbeats in
            # every client has been heard (each gets its first answer: data or `busy`),
            # and then reads no more
            async with asyncio.timeout(120):
                firsts = await asyncio.gather(*(s.recv_multipart() for s in sockets))
            answers = [json.loads(first[1]) for first in firsts]
            during = rss_bytes(camera)
        finally:
            for socket in sockets:
                socket.close()
            context.term()
        after = await settle_rss(camera, before)
        await site.take_image()
    assert_alive(beats)
    busy = sum(1 for a in answers if a.get("code") == "busy")
    print(f"camera RSS: before {before / 1e6:.0f} MB, flooded {during / 1e6:.0f} MB, "
          f"after {after / 1e6:.0f} MB; {busy} of 1500 clients told busy")  # fmt: skip
    assert busy > 0  # the flood reached the server's limits
    assert after <= before * 1.2


# ---- 3, 4 and 7: header announcements ----------------------------------------------


async def test_3_a_header_document_that_is_not_a_mapping_costs_nothing(
    process_site_now: ProcessSite,
) -> None:
    """Announced for the next image, checksum right, where headers are written: the
    file is archived (completed by the real header), and catchUp still works."""
    site = process_site_now
    forged = site.state / "headers" / f"HeaderService-{site.index}" / "forged.yaml"
    forged.parent.mkdir(parents=True, exist_ok=True)

    async def announce(image: str) -> None:
        data = b"just a string, not a header\n"
        forged.write_bytes(data)
        await announce_header(site, image, forged.as_uri(), data)

    async with Heartbeats(site) as beats:
        image, events = await with_next_image(site, announce)
        async with Remote(site.bus, site.address("Archiver")) as archiver:
            ack = await archiver.command("catchUp", timeout=120)
            assert "catch-up archived" in ack.result
            assert await archiver.state() is State.ENABLED
    assert_alive(beats)
    assert events[-1]["statusCode"] == 0
    assert primary_header(events[-1])["OBSID"] == image


async def announce_header(
    site: ProcessSite, image: str, url: str, data: bytes, **change: Any
) -> None:
    announcement = {
        "id": image, "url": url, "byteSize": len(data),
        "checkSum": hashlib.md5(data).hexdigest(), "mimeType": "application/yaml",
        "generator": "stranger", "version": "0", "seq": 1, "sent_tai": current_tai(),
    } | change  # fmt: skip
    announcement = {k: v for k, v in announcement.items() if v is not None}
    topic = site.address("HeaderService").event("largeFileObjectAvailable")
    await site.bus.publish(topic, encode(announcement))


async def test_4_a_header_announcement_without_checksum_is_not_believed(
    process_site_now: ProcessSite,
) -> None:
    """A forged document (another TELESCOP) announced without a checkSum, and with an
    empty one: both dropped where parsed; the file gets the real header."""
    site = process_site_now
    forged = site.state / "headers" / f"HeaderService-{site.index}" / "forged-4.yaml"
    forged.parent.mkdir(parents=True, exist_ok=True)

    async def announce(image: str) -> None:
        data = document_bytes(image, "Forged Telescope")
        forged.write_bytes(data)
        await announce_header(site, image, forged.as_uri(), data, checkSum=None)
        await announce_header(site, image, forged.as_uri(), data, checkSum="")

    _, events = await with_next_image(site, announce)
    assert [e["statusCode"] for e in events] == [0]  # the real header, at once
    assert primary_header(events[-1])["TELESCOP"] != "Forged Telescope"
    await asyncio.to_thread(verify_event, events[-1])


def verify_event(event: dict[str, Any]) -> None:
    assert verify_archived_file(parse_payload(ImageArchived, event)) == []


async def test_7_names_and_urls_from_the_bus_never_reach_outside_the_directories(
    process_site_now: ProcessSite,
) -> None:
    """startIntegration with ../ in imageDate and imageName, and a header announced at
    file:///dev/zero and at a file outside the trusted directory: nothing written
    outside, no memory taken, the next image archived with its real header."""
    site = process_site_now
    outside = site.state.parent / "outside"
    outside.mkdir(exist_ok=True)
    secret = outside / "secret.yaml"
    start = site.address("Camera").event("startIntegration")
    archiver = site.pid("Archiver")
    before = rss_bytes(archiver)

    async def meddle(image: str) -> None:
        for name, date in ((image, "../../outside"), ("../../outside/x", "20261121")):
            forged = {
                "imageName": name, "imageIndex": 1, "imagesInSequence": 1,
                "imageSource": "AT", "imageController": "O", "imageDate": date,
                "imageNumber": 1, "groupId": "", "imageType": "BIAS", "exposureTime": 0.0,
                "timestampAcquisitionStart": current_tai(), "timeout": 5.0,
                "additionalKeys": "", "additionalValues": "", "seq": 1,
                "sent_tai": current_tai(),
            }  # fmt: skip
            await site.bus.publish(start, encode(forged))
        await announce_header(site, image, "file:///dev/zero", b"", byteSize=10**9)
        data = document_bytes(image, "Forged Telescope")
        secret.write_bytes(data)
        await announce_header(site, image, secret.as_uri(), data)

    async with Heartbeats(site) as beats:
        _, events = await with_next_image(site, meddle)
    assert_alive(beats)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.yaml"]
    assert not list(site.state.parent.glob("**/x.yaml"))
    assert primary_header(events[-1])["TELESCOP"] != "Forged Telescope"
    assert await settle_rss(archiver, before) <= before * 1.2


# ---- 5: a command heard twice --------------------------------------------------------


async def test_5_the_same_command_twice_takes_one_exposure_with_one_final_ack(
    process_site_now: ProcessSite,
) -> None:
    site = process_site_now
    camera = site.address("Camera")
    body = encode({"seq": 7, "origin": "stranger-5", "identity": "ocs@summit", "params": BIAS})
    async with (
        site.bus.subscription(camera.ack) as ack_messages,
        site.bus.subscription(camera.event("startIntegration")) as start_messages,
        Remote(site.bus, camera) as remote,
    ):
        acks, starts = EventStream(ack_messages), EventStream(start_messages)
        await site.bus.publish(camera.command("takeImages"), body)
        await site.bus.publish(camera.command("takeImages"), body)
        mine = [
            (await acks.wait_for(lambda r: r.data["origin"] == "stranger-5", 60)).data
            for _ in range(2)
        ]  # ACK or INPROGRESS, then the final one
        await remote.command("setLogLevel", {"level": 20})  # heard after both copies
        later = [m for m in drain(acks) if m["origin"] == "stranger-5"]
        exposures = drain(starts)
    finals = [a for a in mine + later if a["ack"] not in ("ACK", "INPROGRESS")]
    assert [a["ack"] for a in finals] == ["COMPLETE"], mine + later
    assert len(exposures) == 1


def drain(stream: EventStream) -> list[dict[str, Any]]:
    """What has arrived on ``stream`` so far."""
    return [received.data for received in stream.pending()]


# ---- 6: forged endReadout events -----------------------------------------------------


async def test_6_forged_end_readouts_naming_thousands_of_sensors_cost_nothing(
    process_site_now: ProcessSite,
) -> None:
    site = process_site_now
    archiver_pid = site.pid("Archiver")
    # The baseline is an archiver that has archived an image (its staging buffer and
    # the allocator's pools in use), as after the module's earlier tests: run alone,
    # a fresh one would count the first image's buffers against the forgeries.
    await site.take_image()
    before = rss_bytes(archiver_pid)
    sensors = ",".join(f"R{r:02d}_S{s:02d}" for r in range(100) for s in range(50))
    topic = site.address("Camera").event("endReadout")
    async with (
        Heartbeats(site) as beats,
        Remote(site.bus, site.address("Archiver")) as archiver,
        archiver.stream("imageRetrievalFailed") as failures,
    ):
        for n in range(10):
            forged = {
                "imageName": f"AT_O_20261121_9{n:05d}", "imageIndex": 1,
                "imagesInSequence": 1, "requestedExposureTime": 0.0,
                "timestampEndOfReadout": current_tai(), "sensors": sensors,
                "seq": n + 1, "sent_tai": current_tai(),
            }  # fmt: skip
            await site.bus.publish(topic, encode(forged))
        await site.take_image()
        failed = drain(failures)
    assert_alive(beats)
    assert failed == []
    assert await settle_rss(archiver_pid, before) <= before * 1.2


# ---- 8: forged retained state ---------------------------------------------------------


async def test_8_forged_retained_state_is_corrected_and_not_believed(
    process_site_now: ProcessSite,
) -> None:
    """A retained FAULT and errorCode on a healthy Weather:0, and a retained state for
    a Ghost:7 that does not exist: Weather:0 publishes its own state again and clears
    the error; `cscs ocs status` shows Weather:0 ENABLED without the error (also after
    a real disable/enable) and Ghost:7 as unconfirmed, without a heartbeat."""
    site = process_site_now
    weather = site.address("Weather", 0)
    ghost = site.address("Ghost", 7)
    fault = {"summaryState": 3, "name": "FAULT", "seq": 50, "sent_tai": current_tai()}
    error = {"errorCode": 66, "errorReport": "forged", "traceback": "", "seq": 9,
             "sent_tai": current_tai() + 3600}  # fmt: skip
    enabled = {"summaryState": 2, "name": "ENABLED", "seq": 1, "sent_tai": current_tai()}
    async with Remote(site.bus, weather) as remote, remote.stream("summaryState") as states:
        await site.bus.publish(weather.event("summaryState"), encode(fault), retain=True)
        await site.bus.publish(weather.event("errorCode"), encode(error), retain=True)
        await site.bus.publish(ghost.event("summaryState"), encode(enabled), retain=True)
        await states.wait_for(lambda r: r.data["summaryState"] == 3, 30)  # the forgery
        await states.wait_for(lambda r: r.data["summaryState"] == 2, 30)  # corrected
        try:
            rows = table(await site.status())
            assert rows["Weather:0"][:3] == ["ENABLED", "alive", "-"], rows
            assert rows["Ghost:7"][:2] == ["(ENABLED)", "NO HEARTBEAT (state unconfirmed)"]
            await remote.command("disable")
            await remote.command("enable")
            rows = table(await site.status())
            assert rows["Weather:0"][:3] == ["ENABLED", "alive", "-"], rows
        finally:
            await site.bus.publish(ghost.event("summaryState"), b"", retain=True)


def table(status: str) -> dict[str, list[str]]:
    """`cscs ocs status` rows by CSC: STATE, CONDITION, LAST ERROR."""
    rows: dict[str, list[str]] = {}
    for line in status.splitlines()[1:]:
        cells = [c for c in line.split("  ") if c.strip()]
        if len(cells) >= 6:
            cells = [c.strip() for c in cells]
            rows[cells[0]] = [cells[1], cells[3], cells[5]]
    return rows
