"""Issue 29 items 2, 3 and 5 as they were found: ``cscs dashboard`` and a real CSC
each in its own process on Mosquitto, attacked from outside. What is asserted is what
the night staff rely on: the dashboard's memory stays bounded, a real CSC's state change
still reaches a page that reads, promptly, and the process does not burn a core once
the attack stops. The bounds here carry a generous margin (a loaded 2-core machine);
benchmarks/dashboard_under_attack.py prints the figures.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from cscs.core.broker import EmbeddedBroker
from cscs.core.bus import Bus
from tests.support.dashboard_attack import (
    alarm_flood,
    big_events,
    cpu_seconds,
    csc_flood,
    dashboard_process,
    reading_page,
    real_csc_process,
    stalled_pages,
)
from tests.support.process_site import rss_bytes

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

SHOWN_WITHIN = 5.0  # s: the issue asks for 2 s; the margin is for a loaded CI machine
MB = 2**20


async def test_pages_that_never_read_and_an_alarm_flood_leave_memory_bounded(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """Item 2: three pages that never read, 500 forged alarms with long reasons changing
    1500 times. The dashboard's RSS grows by tens of MB at most (it grew by 2 GB), a
    page that reads sees a real CSC's state change promptly throughout, and pages
    beyond the limit are refused rather than each given a snapshot."""
    prefix = f"attack{index}"
    async with (
        Bus(mosquitto.address) as bus,
        real_csc_process(bus, mosquitto.url, prefix, tmp_path, 7) as csc,
        dashboard_process(mosquitto.url, prefix, tmp_path / "dash") as dashboard,
        reading_page(dashboard.url) as page,
    ):
        await page.shown("Test:7", "STANDBY", 30)
        before = rss_bytes(dashboard.pid)
        with stalled_pages(dashboard.port, 3):
            flood = asyncio.create_task(alarm_flood(bus, prefix, alarms=500, changes=1500))
            await csc.command("start", timeout=30)
            took = await page.shown("Test:7", "DISABLED", 30)
            await flood
            await csc.command("standby", timeout=30)
            took = max(took, await page.shown("Test:7", "STANDBY", 30))
            grown = rss_bytes(dashboard.pid) - before
        assert took < SHOWN_WITHIN, f"state change shown after {took:.1f} s"
        assert grown < 100 * MB, f"RSS grew by {grown / MB:.0f} MB"

        # Beyond the page limit (20): refused, not each given a snapshot to hold.
        with stalled_pages(dashboard.port, 25) as pages:
            answers = []
            for stalled in pages:
                stalled.settimeout(10)
                answers.append(stalled.recv(12))
        assert answers.count(b"HTTP/1.1 503") >= 5, answers
        # They left: their places are freed within a tick or two (a new page is served).
        async with asyncio.timeout(10):
            while True:
                try:
                    async with reading_page(dashboard.url) as again:
                        await again.shown("Test:7", "STANDBY", 30)
                        break
                except aiohttp.ClientResponseError as exc:
                    if exc.status != 503:
                        raise
                    await asyncio.sleep(0.2)  # polling the condition: a place free again


@pytest.mark.long  # 7-17 s: the long tier keeps `make test` within 8 minutes
async def test_twenty_thousand_invented_cscs_hide_no_real_one(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """Item 3: one QoS-0 heartbeat each from Camera:0..19999. The page's CSC table stays
    bounded, the real CSC is shown alive and its state change promptly, and once the
    flood stops the dashboard is idle (it burned 30 % of a core with no new input)."""
    prefix = f"attack{index}"
    async with (
        Bus(mosquitto.address) as bus,
        real_csc_process(bus, mosquitto.url, prefix, tmp_path, 7) as csc,
        dashboard_process(mosquitto.url, prefix, tmp_path / "dash") as dashboard,
        reading_page(dashboard.url) as page,
    ):
        await page.shown("Test:7", "STANDBY", 30)
        flood = asyncio.create_task(csc_flood(bus, prefix, 20_000))
        await asyncio.sleep(0.5)  # the flood under way (not a synchronisation)
        await csc.command("start", timeout=30)
        took = await page.shown("Test:7", "DISABLED", 30)
        await flood
        await csc.command("standby", timeout=30)
        took = max(took, await page.shown("Test:7", "STANDBY", 30))
        assert took < SHOWN_WITHIN, f"state change shown after {took:.1f} s"
        assert page.rows_most <= 256, f"{page.rows_most} rows pushed"

        await asyncio.sleep(4)  # the invented ones are LOST (3 s): nothing more comes
        cpu, wall = cpu_seconds(dashboard.pid), time.monotonic()
        await asyncio.sleep(2)
        busy = (cpu_seconds(dashboard.pid) - cpu) / (time.monotonic() - wall)
        assert busy < 0.1, f"{busy:.0%} of a core with no input"
        assert page.cscs["Test:7"]["condition"] == "alive"


async def test_huge_events_do_not_leave_the_page_behind(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """Item 5, the dashboard's side: ten 20 MB events are dropped unread; the page
    still shows a real CSC's state change promptly, and memory does not keep them."""
    prefix = f"attack{index}"
    async with (
        Bus(mosquitto.address) as bus,
        real_csc_process(bus, mosquitto.url, prefix, tmp_path, 7) as csc,
        dashboard_process(mosquitto.url, prefix, tmp_path / "dash") as dashboard,
        reading_page(dashboard.url) as page,
    ):
        await page.shown("Test:7", "STANDBY", 30)
        before = rss_bytes(dashboard.pid)
        await big_events(bus, prefix, 10, 20 * MB)
        await csc.command("start", timeout=30)
        took = await page.shown("Test:7", "DISABLED", 30)
        assert took < SHOWN_WITHIN, f"state change shown after {took:.1f} s"
        grown = rss_bytes(dashboard.pid) - before
        assert grown < 150 * MB, f"RSS grew by {grown / MB:.0f} MB"
