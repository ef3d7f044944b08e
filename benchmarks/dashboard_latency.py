"""The dashboard in a real browser: the page's first load, and ``imageArchived`` → the
image's row showing it archived.

    python benchmarks/dashboard_latency.py [--images 40] [--loads 5]

Runs LATISS's simulated CSCs in this process on an embedded broker (fast readouts), the
dashboard, and Debian's chromium (Playwright). First load: from ``goto`` until the page
says "live" (the snapshot drawn), against, in the same run, loading one static file of
the same server (what any page costs here). Row latency: for each of ``--images`` biases,
the moment this process hears ``imageArchived`` against the moment the browser's DOM
shows the row's archived cell at 1/1 (a MutationObserver stamps it; both are the
machine's wall clock). The baseline for it is the same event's trip through the broker to
this process (published ``sent_tai`` → heard): the page's cost in units of one bus hop.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from playwright.async_api import async_playwright

from cscs.archiver.interface import IMAGE_ARCHIVED
from cscs.core.broker import EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.settings import Settings
from cscs.core.tai import current_tai
from cscs.dashboard.run import dashboard_options, running_dashboard
from sim.testkit import observatory

_STAMP_ROWS = """() => {
  window.archivedAt = {};
  new MutationObserver(() => {
    for (const cell of document.querySelectorAll('#images td[data-testid=archived]')) {
      const name = cell.parentElement.dataset.image;
      if (cell.textContent === '1/1' && !(name in window.archivedAt))
        window.archivedAt[name] = performance.timeOrigin + performance.now();
    }
  }).observe(document.getElementById('images'), {childList: true, subtree: true,
                                                 characterData: true});
}"""


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _main(images: int, loads: int) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        async with (
            EmbeddedBroker("auto") as broker,
            observatory(broker, "bench", tmp_path) as site,
            Bus(broker.address) as bus,
            async_playwright() as p,
        ):
            options = dashboard_options(Settings(prefix="bench", state_dir=tmp_path),
                                        archive_root=site.archive)  # fmt: skip
            async with running_dashboard(bus, options) as url:
                browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                first, static = [], []
                for _ in range(loads):
                    page = await browser.new_page()
                    start = time.perf_counter()
                    await page.goto(url + "static/dashboard.css")
                    static.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    await page.goto(url)
                    await page.get_by_text("live", exact=True).wait_for()
                    first.append(time.perf_counter() - start)
                    await page.close()
                page = await browser.new_page()
                await page.goto(url)
                await page.get_by_text("live", exact=True).wait_for()
                await page.evaluate(_STAMP_ROWS)
                heard: dict[str, float] = {}
                hops: list[float] = []
                async with site.archiver.remote.events(IMAGE_ARCHIVED) as archived:
                    command = asyncio.create_task(site.camera.remote.command("takeImages", {
                        "numImages": images, "expTime": 0.0, "shutter": False,
                        "imageType": "BIAS"}, timeout=600))  # fmt: skip
                    while len(heard) < images:
                        event = await archived.next(120)
                        heard[event.data.imageName] = time.time() * 1e3
                        hops.append((current_tai() - event.sent_tai) * 1e3)
                    await command
                await page.wait_for_function(
                    "n => Object.keys(window.archivedAt).length >= n", arg=images, timeout=120_000
                )
                shown = await page.evaluate("() => window.archivedAt")
                await browser.close()
    rows = [shown[name] - heard[name] for name in heard]
    first_ms, static_ms = statistics.median(first) * 1e3, statistics.median(static) * 1e3
    print(f"first load (snapshot drawn), median of {loads}: {first_ms:.0f} ms; one static "
          f"file: {static_ms:.0f} ms; ratio {first_ms / static_ms:.1f}")  # fmt: skip
    print(f"imageArchived -> row shows it archived, {images} images: p50 "
          f"{_percentile(rows, 0.5):.1f} ms, p99 {_percentile(rows, 0.99):.1f} ms; one bus hop "
          f"p50 {_percentile(hops, 0.5):.1f} ms; ratio p50 "
          f"{_percentile(rows, 0.5) / max(_percentile(hops, 0.5), 0.01):.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(_main(args.images, args.loads))


if __name__ == "__main__":
    main()
