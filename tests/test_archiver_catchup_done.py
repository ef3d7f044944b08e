"""``catchUp`` done means its files are written, even those another pass began (issue
29, item 16b): a pass that found a sensor under way used to count it as nobody's work
and end at once, before the other pass had written the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cscs.core.broker import EmbeddedBroker
from sim.testkit import observatory
from tests.test_archiver import BIAS, opened_catalog

pytestmark = pytest.mark.broker


async def test_catch_up_returns_once_the_files_of_a_pass_under_way_are_written(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    async with (
        observatory(
            mosquitto,
            f"c{index}",
            tmp_path,
            enable_archiver=False,
            archiver={"stall_timeout": 20.0},
        ) as obs,  # fmt: skip
        obs.archiver.remote.stream() as events,
    ):
        await obs.camera.remote.command("takeImages", {"numImages": 1, **BIAS}, timeout=60)
        # Its one sensor takes 16 x 0.1 s to read: the pass at enable is still at it
        # when catchUp comes.
        await obs.camera.remote.command("injectFault", {"kind": "slow", "delay": 0.1, "count": 0})
        await obs.archiver.remote.command("enable")  # its catch-up pass begins the file
        await events.wait_for(lambda e: e.name == "logMessage" and "catching up" in e.data.get(
            "message", ""), timeout=30)  # fmt: skip
        ack = await obs.archiver.remote.command("catchUp", timeout=60)
        with opened_catalog(obs) as catalog:
            written = catalog.count()
    assert written == 1, f"catchUp ended ({ack.result!r}) with {written} file(s) written"
