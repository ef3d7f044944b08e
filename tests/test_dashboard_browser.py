"""The dashboard in a real browser (Debian's chromium, driven by Playwright), with
simulated CSCs on Mosquitto: what the night staff see, not what the server thinks it
sent. Waits are Playwright's ``expect``: it polls the page until the condition holds
or its timeout passes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from cscs.archiver.interface import IMAGE_ARCHIVED
from cscs.core.broker import EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.protocol import encode
from cscs.core.remote import Remote
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.testing import enabled_csc
from cscs.core.topics import CscAddress
from cscs.dashboard.run import dashboard_options, running_dashboard
from cscs.telemetry_gateway.csc import TelemetryGatewayCsc
from sim.testkit import observatory

playwright = pytest.importorskip("playwright.async_api", reason="pip install playwright")
from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason="chromium is not installed (apt-get install chromium); .ci/run installs it",
    ),
]
WAIT = 60_000  # ms: what a page may take to show a change on a loaded 2-core machine


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def _open(browser: Browser, url: str) -> Page:
    page = await browser.new_page()
    await page.goto(url)
    await expect(page.get_by_test_id("connection")).to_have_text("live", timeout=WAIT)
    return page


async def test_a_night_shows_states_rows_qc_previews_and_alarms_that_can_be_acknowledged(
    mosquitto: EmbeddedBroker, browser: Browser, index: int, tmp_path: Path
) -> None:
    prefix = f"dash{index}"
    dm = f"dm{index}"
    rules = [{"name": "qc.seeing", "metric": "psfFwhm", "warning": 1.2, "serious": 1.5,
              "critical": 2.0, "hysteresis": 0.05}]  # fmt: skip
    async with (
        observatory(mosquitto, prefix, tmp_path) as site,
        enabled_csc(TelemetryGatewayCsc, mosquitto, tmp_path / "gw", prefix,
                    {"dm_prefix": dm, "health": {"watched": []}, "rules": rules}),
        Bus(mosquitto.address) as bus,
    ):  # fmt: skip
        settings = Settings(
            prefix=prefix, state_dir=tmp_path, config_dir=tmp_path / "gw" / "config"
        )
        options = dashboard_options(settings, allow_commands=True, archive_root=site.archive)
        async with running_dashboard(bus, options) as url:
            page = await _open(browser, url)
            cscs = page.get_by_test_id("cscs")
            archiver = cscs.locator("tr", has_text="Archiver:1")
            await expect(archiver).to_contain_text("ENABLED", timeout=WAIT)
            await expect(archiver).to_contain_text("alive")

            await site.archiver.remote.command("disable")  # a state change, seen live
            await expect(archiver.locator("td.DISABLED")).to_have_text("DISABLED", timeout=WAIT)
            await site.archiver.remote.command("enable")
            await expect(archiver.locator("td.ENABLED")).to_have_text("ENABLED", timeout=WAIT)

            await site.point(61.0, -75.0)  # circumpolar: up at any hour (the header complete)
            async with site.archiver.remote.events(IMAGE_ARCHIVED) as archived:
                await site.camera.remote.command("takeImages", {
                    "numImages": 1, "expTime": 1.0, "shutter": True, "imageType": "OBJECT",
                }, timeout=60)  # fmt: skip
                image = (await archived.next(60)).data.imageName
            row = page.locator(f'#images tr[data-image="{image}"]')
            await expect(row.get_by_test_id("archived")).to_have_text("1/1", timeout=WAIT)
            await expect(row.get_by_test_id("verified")).to_have_text("1/1", timeout=WAIT)
            await expect(row).to_contain_text("OBJECT")
            await expect(row).to_contain_text("complete")

            # The QC OCS Batch publishes for an image (its own tests show it measures it).
            qc = {"imageName": image, "instrument": "LATISS", "nSensors": 1, "psfFwhm": 1.62,
                  "psfFwhmMin": 1.6, "psfFwhmMax": 1.7, "psfE1": 0.012, "psfE2": -0.02,
                  "ellipticity": 0.023, "skyMean": 41.5, "skyRms": 6.1, "zeroPoint": 27.48,
                  "nSources": 87, "jobId": "20261122-0000abcd",
                  "sent_tai": current_tai()}  # fmt: skip
            await bus.publish(f"{dm}/qc/LATISS/{image}", json.dumps(qc).encode(), qos=1)
            seeing = row.locator('td[data-metric="psfFwhm"]')
            await expect(seeing).to_have_text("1.62", timeout=WAIT)
            await expect(seeing).to_have_class("cell-3")  # SERIOUS by the gateway's rule
            await expect(row.locator('td[data-metric="zeroPoint"]')).to_have_text("27.48")
            await expect(row.locator('td[data-metric="nSources"]')).to_have_text("87")
            await expect(page.get_by_test_id("plot-psfFwhm").locator("circle")).to_have_count(1)
            await expect(page.get_by_test_id("plot-psfFwhm").locator("line.level-3")).to_have_count(
                1
            )

            await row.click()  # the preview of the archived file, drawn and loaded
            preview = page.get_by_test_id("preview")
            await expect(preview).to_be_visible(timeout=WAIT)
            await expect(preview).to_have_attribute("src", f"/preview/{image}.png")
            await page.wait_for_function(
                "() => document.getElementById('preview').naturalWidth > 0", timeout=WAIT
            )
            width = await preview.evaluate("img => img.naturalWidth")
            assert width == 4072 // 8  # one LATISS CCD, overscan removed, binned 8x8

            alarm = page.locator('#alarms tr[data-alarm="qc.seeing"]')
            await expect(alarm).to_contain_text("SERIOUS", timeout=WAIT)
            await expect(alarm.get_by_test_id("alarm-state")).to_have_text("ACTIVE")
            # Below its max severity an acknowledgement is refused, and the page says so.
            await alarm.get_by_test_id("ack-severity").select_option("2")
            await alarm.get_by_test_id("acknowledge").click()
            result = page.get_by_test_id("command-result")
            await expect(result).to_contain_text("REFUSED", timeout=WAIT)
            await expect(alarm.get_by_test_id("alarm-state")).to_have_text("ACTIVE")
            await alarm.get_by_test_id("ack-severity").select_option("3")
            await alarm.get_by_test_id("acknowledge").click()
            await expect(result).to_contain_text("done", timeout=WAIT)
            await expect(alarm.get_by_test_id("alarm-state")).to_contain_text(
                "acknowledged by", timeout=WAIT
            )
            await page.close()


async def test_a_killed_csc_shows_lost_the_log_filters_and_html_stays_text(
    mosquitto: EmbeddedBroker, browser: Browser, index: int, tmp_path: Path
) -> None:
    prefix = f"dash{index}"
    env = {**os.environ, "CSCS_PREFIX": prefix, "CSCS_STATE_DIR": str(tmp_path)}
    csc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", "run", "Test", "--index", "7", "--broker", mosquitto.url,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with Bus(mosquitto.address) as bus:
            settings = Settings(prefix=prefix, state_dir=tmp_path)
            async with running_dashboard(bus, dashboard_options(settings)) as url:
                page = await _open(browser, url)
                test = page.get_by_test_id("cscs").locator("tr", has_text="Test:7")
                await expect(test).to_contain_text("STANDBY", timeout=WAIT)
                await expect(test).to_contain_text("alive", timeout=WAIT)
                async with Remote(bus, CscAddress("Test", 7, prefix)) as remote:
                    await remote.command("start", timeout=30)
                await expect(test.locator("td.DISABLED")).to_have_text("DISABLED", timeout=WAIT)

                html = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
                for name, level, message in [("Archiver", 30, f"disk {html}"),
                                             ("HeaderService", 20, "header written")]:  # fmt: skip
                    topic = CscAddress(name, 1, prefix).event("logMessage")
                    payload: dict[str, Any] = {"seq": 1, "sent_tai": current_tai(), "name": "x",
                                               "level": level, "message": message}  # fmt: skip
                    await bus.publish(topic, encode(payload), qos=1)
                logs = page.get_by_test_id("logs")
                warning = logs.locator('li[data-csc="Archiver:1"]')
                info = logs.locator('li[data-csc="HeaderService:1"]')
                await expect(warning).to_have_text(
                    f"Archiver:1 WARNING x: disk {html}", timeout=WAIT
                )
                await expect(info).to_have_count(1, timeout=WAIT)
                assert await logs.locator("b, img").count() == 0  # text, not elements
                assert await page.title() != "pwned"

                await page.get_by_test_id("log-level").select_option("30")
                await expect(info).to_have_count(0)
                await expect(warning).to_have_count(1)
                await page.get_by_test_id("log-level").select_option("10")
                await page.get_by_test_id("log-csc").select_option("HeaderService:1")
                await expect(logs.locator("li")).to_have_text(
                    ["HeaderService:1 INFO x: header written"]
                )

                csc.send_signal(signal.SIGKILL)  # no goodbye: the broker's last will speaks
                await csc.wait()
                await expect(test).to_have_class("lost", timeout=WAIT)
                await expect(test.get_by_test_id("condition")).to_contain_text("LOST")
                await page.close()
    finally:
        if csc.returncode is None:
            csc.kill()
            await csc.wait()


async def test_a_rows_buttons_act_on_that_alarm_alone_even_one_named_star(
    mosquitto: EmbeddedBroker, browser: Browser, index: int, tmp_path: Path
) -> None:
    """Issue 29 item 1: an alarm forged on the bus with the name ``*``. Its row's Mute
    and Acknowledge are refused by the gateway (it has no alarm of that name) instead
    of muting or acknowledging every alarm; the real alarm stays ACTIVE, unmuted. The
    gateway runs in its own process (``cscs run``), the attacker is another client."""
    prefix, dm = f"dash{index}", f"dm{index}"
    rules = [{"name": "qc.seeing", "metric": "psfFwhm", "warning": 1.2, "serious": 1.5,
              "critical": 2.0, "hysteresis": 0.05}]  # fmt: skip
    configs = tmp_path / "gw" / "config"
    (configs / "TelemetryGateway").mkdir(parents=True)
    (configs / "TelemetryGateway" / "test.yaml").write_text(
        json.dumps({"dm_prefix": dm, "health": {"watched": []}, "rules": rules})
    )
    env = {**os.environ, "CSCS_PREFIX": prefix, "CSCS_STATE_DIR": str(tmp_path / "gw"),
           "CSCS_CONFIG_DIR": str(configs)}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", "run", "TelemetryGateway", "--broker", mosquitto.url,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with (
        Bus(mosquitto.address) as bus,
        Bus(mosquitto.address) as attacker,
        Remote(bus, CscAddress("TelemetryGateway", 0, prefix)) as gateway,
    ):
        try:
            await gateway.wait_for_state(State.STANDBY, timeout=60)
            await gateway.command("start", {"configurationOverride": "test"}, timeout=60)
            await gateway.command("enable", timeout=60)
            await _star_alarm_refused(bus, attacker, browser, prefix, dm, configs, tmp_path)
        finally:
            process.terminate()
            await process.wait()


async def _star_alarm_refused(
    bus: Bus, attacker: Bus, browser: Browser, prefix: str, dm: str, configs: Path, tmp: Path
) -> None:
    qc = {"imageName": "AT_O_20261121_000009", "instrument": "LATISS", "nSensors": 1,
          "psfFwhm": 1.62, "psfFwhmMin": 1.6, "psfFwhmMax": 1.7, "psfE1": 0.0, "psfE2": 0.0,
          "ellipticity": 0.0, "skyMean": 41.5, "skyRms": 6.1, "zeroPoint": 27.48,
          "nSources": 87, "jobId": "20261122-0000abcd", "sent_tai": current_tai()}  # fmt: skip
    await bus.publish(f"{dm}/qc/LATISS/AT_O_20261121_000009", json.dumps(qc).encode(), qos=1)
    now = current_tai()
    forged = {"name": "*", "severity": 4, "reason": "click me", "maxSeverity": 4,
              "acknowledged": False, "acknowledgedBy": "", "mutedSeverity": 1, "mutedBy": "",
              "timestampSeverityNewest": now, "timestampMaxSeverity": now,
              "timestampAcknowledged": 0.0, "timestampUnmute": 0.0}  # fmt: skip
    settings = Settings(prefix=prefix, state_dir=tmp, config_dir=configs)
    options = dashboard_options(settings, allow_commands=True)
    async with running_dashboard(bus, options) as url:
        page = await _open(browser, url)
        real = page.locator('#alarms tr[data-alarm="qc.seeing"]')
        await expect(real).to_contain_text("SERIOUS", timeout=WAIT)
        await attacker.publish(f"{prefix}/TelemetryGateway/0/evt/alarm", encode(forged))
        star = page.locator('#alarms tr[data-alarm="*"]')
        await expect(star).to_contain_text("click me", timeout=WAIT)

        result = page.get_by_test_id("command-result")
        await star.get_by_test_id("mute").click()
        await expect(result).to_contain_text("REFUSED", timeout=WAIT)
        await expect(result).to_contain_text("no alarm named '*'")
        await star.get_by_test_id("ack-severity").select_option("4")
        await star.get_by_test_id("acknowledge").click()
        await expect(result).to_contain_text("acknowledge *: REFUSED", timeout=WAIT)
        await expect(result).to_contain_text("no alarm named '*'")

        # The real one: neither muted (its row still offers Mute, not Unmute) nor
        # acknowledged, as the gateway announces it after acting on its own row.
        await expect(real.get_by_test_id("alarm-state")).to_have_text("ACTIVE")
        await real.get_by_test_id("mute").click()
        await expect(result).to_contain_text("mute qc.seeing: done", timeout=WAIT)
        await expect(result).to_contain_text("muted 1 alarm(s)")
        await expect(real.get_by_test_id("alarm-state")).to_have_text(
            re.compile(r"^ACTIVE, muted to SERIOUS by "), timeout=WAIT
        )
        await page.close()
