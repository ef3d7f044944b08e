"""A hostile DAQ cannot stall the archiver (issue 29, item 4): the archiver, in its own
process on Mosquitto, is fed a forged ``daqAvailable`` pointing at a DAQ whose ``list``
reply is 84 MB. Before, its heartbeat stopped for 24 s and its RSS went 160 -> 658 MB;
now the reply is refused unread (``ZMQ_MAXMSGSIZE``), the pass is skipped with a reason,
and the archiver beats and answers throughout, its memory as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cscs.archiver.interface import IMAGE_RETRIEVAL_FAILED
from cscs.core.broker import EmbeddedBroker
from cscs.core.protocol import encode
from cscs.core.remote import Received, Remote
from sim.daq.hostile import HostileDaq, listing
from tests.support.hostile_daq import DAQ_TIMEOUT, announce_daq, archiver_alone
from tests.support.process_site import Heartbeats, rss_bytes

pytestmark = pytest.mark.broker


async def test_a_daq_answering_list_with_84_mb_stalls_nothing(
    mosquitto: EmbeddedBroker, tmp_path: Path
) -> None:
    huge = listing(1_200_000, "AT_O_20261207", "R00_S00")  # ~84 MB, one JSON frame
    assert len(huge) > 80_000_000
    daq = HostileDaq(huge).start()
    try:
        async with archiver_alone(mosquitto, tmp_path / "state") as site:
            archiver = Remote(site.bus, site.address("Archiver"))
            pid = site.pid("Archiver")
            before = rss_bytes(pid)
            async with archiver, archiver.stream() as events, Heartbeats(site) as beats:
                await announce_daq(site, daq.endpoint)
                assert await asyncio.to_thread(daq.listed.wait, 30), "the archiver never listed"
                skipped = await events.wait_for(
                    lambda e: e.name == "logMessage" and "catch-up skipped" in e.data["message"],
                    timeout=30 + DAQ_TIMEOUT,
                )
                await archiver.command("setLogLevel", {"level": 20}, timeout=5)  # answered
                silences = beats.longest_silence()
            after = rss_bytes(pid)
    finally:
        daq.close()
    assert "no answer from the DAQ" in skipped.data["message"]
    assert max(silences.values()) < 2.0, silences
    assert after <= 1.2 * before, f"RSS {before / 1e6:.0f} MB -> {after / 1e6:.0f} MB"


def ignored(event: Received) -> bool:
    return event.name == "logMessage" and "ignored an unreadable message" in event.data["message"]


async def test_a_peers_text_and_oversized_events_travel_no_further(
    mosquitto: EmbeddedBroker, tmp_path: Path
) -> None:
    """Item 5: a DAQ's 4 MB error message (escapes and all) becomes a short printable
    reason in ``imageRetrievalFailed`` and in the log; ten 20 MB events on a topic the
    archiver follows are dropped unparsed, one log line saying so, its heartbeat
    steady."""
    nasty = "forged line " * 250_000 + "\x1b[2J\n"  # 3 MB, under the header bound: parsed
    daq = HostileDaq(listing(1, "AT_O_20261207", "R00_S00"), nasty).start()
    try:
        async with archiver_alone(mosquitto, tmp_path / "state") as site:
            archiver = Remote(site.bus, site.address("Archiver"))
            async with (
                archiver,
                archiver.events(IMAGE_RETRIEVAL_FAILED) as failures,
                archiver.stream() as events,
                Heartbeats(site) as beats,
            ):
                await announce_daq(site, daq.endpoint)
                failed = (await failures.next(timeout=60)).data
                end_readout = site.address("Camera").event("endReadout")
                big = encode({"seq": 1, "sent_tai": 1.0, "pad": "x" * 20_000_000})
                for _ in range(10):
                    await site.bus.publish(end_readout, big, qos=1)
                for _ in range(10):  # the CSC's own line for each: all were handled
                    await events.wait_for(ignored, timeout=30)
                silences = beats.longest_silence()
            log = site.log("Archiver")
    finally:
        daq.close()
    assert failed.sensor == "R00_S00"
    assert len(failed.description) < 1000
    assert failed.description.isprintable()
    assert f"({len(nasty)} characters)" in failed.description
    assert f"message too big to parse: dropped bytes={len(big)}" in log
    assert max(silences.values()) < 2.0, silences
    assert len(log) < 200_000, f"the archiver's log grew to {len(log)} bytes"
