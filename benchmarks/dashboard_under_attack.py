"""The dashboard under the attacks of issue 29 (items 2, 3 and 5): its memory, and how
soon a real CSC's state change reaches a page that reads, while the attack runs.

    python -m benchmarks.dashboard_under_attack [--changes 2000] [--cscs 20000]

``cscs dashboard`` and a real CSC (``cscs run Test``) each in its own process on
Mosquitto (the embedded amqtt where it is missing), a page that reads its event stream,
and from outside, one after the other:

* ``alarms``: three pages that never read, ``--changes`` forged alarm changes over 500
  alarms with 2000-character reasons;
* ``pages``: 150 pages that never read (the dashboard serves 20; the rest are refused);
* ``cscs``: one QoS-0 heartbeat each from Camera:0..``--cscs``-1, then the CPU the
  dashboard uses over 3 s with no input;
* ``big``: ten 20 MB events.

During each, the real CSC is sent ``start``/``standby`` in turn; the time from its ack
to the page showing the new state is one latency sample. RSS: before, the most seen
during, and after the pages left (``/proc``, sampled every 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from cscs.core.broker import EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.remote import Remote
from tests.support.dashboard_attack import (
    PageReader,
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

MB = 2**20


async def _peak_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_bytes(pid))
        await asyncio.sleep(0.05)


async def _state_changes(csc: Remote, page: PageReader, until: asyncio.Task[None]) -> list[float]:
    """start/standby in turn while ``until`` runs (at least once): each one's latency."""
    samples: list[float] = []
    while True:
        for command, state in (("start", "DISABLED"), ("standby", "STANDBY")):
            await csc.command(command, timeout=60)
            samples.append(await page.shown("Test:7", state, 120))
        if until.done():
            return samples


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


async def _one(
    name: str,
    attack: Callable[[], Awaitable[None]],
    pid: int,
    csc: Remote,
    page: PageReader,
    stalled: Callable[[], contextlib.AbstractContextManager[object]] = _nothing,
) -> None:
    before = rss_bytes(pid)
    peak, stop = [before], asyncio.Event()
    sampler = asyncio.create_task(_peak_rss(pid, peak, stop))
    start = time.monotonic()
    with stalled():
        task: asyncio.Task[None] = asyncio.ensure_future(attack())
        samples = await _state_changes(csc, page, task)
        await task
        took = time.monotonic() - start
        during = rss_bytes(pid)
    await asyncio.sleep(2.0)  # the pages gone: a tick or two to drop them
    stop.set()
    await sampler
    after = rss_bytes(pid)
    print(
        f"{name:7s} attack {took:5.1f} s | state change shown: median "
        f"{statistics.median(samples):.2f} s, max {max(samples):.2f} s ({len(samples)}) | "
        f"RSS before {before / MB:.0f} MB, peak {peak[0] / MB:.0f} MB, end of attack "
        f"{during / MB:.0f} MB, after the pages left {after / MB:.0f} MB",
        flush=True,
    )


async def main(changes: int, cscs: int) -> None:
    async with EmbeddedBroker() as broker, Bus(broker.address) as bus:
        with tempfile.TemporaryDirectory() as tmp:
            state, prefix = Path(tmp), "attack"
            async with (
                real_csc_process(bus, broker.url, prefix, state, 7) as csc,
                dashboard_process(broker.url, prefix, state / "dash") as dashboard,
                reading_page(dashboard.url) as page,
            ):
                await page.shown("Test:7", "STANDBY", 60)
                pid = dashboard.pid
                print(f"broker {broker.url}; dashboard pid {pid}", flush=True)
                await _one("alarms", lambda: alarm_flood(bus, prefix, 500, changes, 2000),
                           pid, csc, page, lambda: stalled_pages(dashboard.port, 3))  # fmt: skip
                await _one("pages", lambda: asyncio.sleep(3.0), pid, csc, page,
                           lambda: stalled_pages(dashboard.port, 150))  # fmt: skip
                await _one("cscs", lambda: csc_flood(bus, prefix, cscs), pid, csc, page)
                await asyncio.sleep(4.0)  # the invented CSCs LOST: no input from now on
                cpu, wall = cpu_seconds(pid), time.monotonic()
                await asyncio.sleep(3.0)
                busy = (cpu_seconds(pid) - cpu) / (time.monotonic() - wall)
                print(f"idle after the cscs flood: {busy:.1%} of a core; page rows "
                      f"most {page.rows_most}", flush=True)  # fmt: skip
                await _one("big", lambda: big_events(bus, prefix, 10, 20 * MB), pid, csc, page)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=2000)
    parser.add_argument("--cscs", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.changes, args.cscs))
