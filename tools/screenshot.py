"""``make screenshot``: the dashboard during the demo night, as a PNG.

Runs the demo night (LATISS, fast readouts) with the dashboard, opens the page in
Debian's chromium (Playwright), waits until a few science images have their QC values
in the table and one preview is shown, and saves the whole page.

    python tools/screenshot.py [dashboard.png]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from playwright.async_api import async_playwright

from cscs.camera.geometry import Camera
from sim.site.demo import run_demo

QC_ROWS = 3  # science images with their seeing measured
WAIT_MS = 900_000


async def _shoot(url: str, path: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1600, "height": 1200})
        await page.goto(url)
        await page.wait_for_function(
            "n => [...document.querySelectorAll('#images td[data-metric=psfFwhm]')]"
            ".filter(td => td.textContent).length >= n",
            arg=QC_ROWS, timeout=WAIT_MS,
        )  # fmt: skip
        await page.locator("#images td[data-metric=psfFwhm]:not(:empty)").first.click()
        await page.wait_for_function(
            "() => document.getElementById('preview').naturalWidth > 0", timeout=WAIT_MS
        )
        await page.screenshot(path=str(path), full_page=True)
        await browser.close()
    print(f"screenshot of the dashboard: {path}", flush=True)


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "dashboard.png").resolve()
    return asyncio.run(
        run_demo(camera=Camera.LATISS, fast=True, watch_dashboard=lambda url: _shoot(url, path))
    )


if __name__ == "__main__":
    sys.exit(main())
