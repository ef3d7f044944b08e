"""A hostile DAQ cannot stall the archiver (issue 29, item 4): the archiver, in its own
process on Mosquitto, is fed a forged ``daqAvailable`` pointing at a DAQ whose ``list``
reply is 84 MB. Before, its heartbeat stopped for 24 s and its RSS went 160 -> 658 MB;
now the reply is refused unread (``ZMQ_MAXMSGSIZE``), the pass is skipped with a reason,
and the archiver beats and answers throughout, its memory as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cscs.core.broker import EmbeddedBroker
from cscs.core.remote import Remote
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
