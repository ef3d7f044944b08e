"""Issue 29, item 8: a header service paused past an exposure's deadline (SIGSTOP, as
an overloaded or swapped-out host does) still makes the header of an exposure whose end
the broker had delivered while it was paused. On SIGCONT its timer, long due, used to
fire before it read the queued ``endOfImageTelemetry``: "exposure abandoned: its end
never came", the header lost for good. Events already delivered now come first.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from cscs.camera.headers.announcement import LARGE_FILE_OBJECT_AVAILABLE
from cscs.core.protocol import encode
from cscs.core.remote import Remote
from cscs.core.tai import current_tai
from tests.support.process_site import ProcessSite

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

DEADLINE = 2.0  # s: the exposure's startIntegration.timeout
PAUSE = DEADLINE + 1.5  # s: well past it, well inside the MQTT keepalive (1.5 x 5 s)
IMAGE = "AT_O_20261121_990001"  # a name the site's own camera never gives


async def test_a_header_service_paused_past_the_deadline_reads_the_end_it_was_sent(
    process_site_now: ProcessSite,
) -> None:
    site = process_site_now
    camera, service = site.address("Camera"), site.address("HeaderService")
    begin = current_tai()

    async def event(name: str, **data: Any) -> None:
        body = data | {"imageName": IMAGE, "seq": 1, "sent_tai": current_tai()}
        assert await site.bus.publish(camera.event(name), encode(body), qos=1)

    async with (
        Remote(site.bus, service) as headers,
        headers.events(LARGE_FILE_OBJECT_AVAILABLE) as announced,
    ):
        await event("startIntegration", imageIndex=1, imagesInSequence=1, imageSource="AT",
                    imageController="O", imageDate="20261121", imageNumber=990001,
                    groupId="paused", imageType="BIAS", exposureTime=0.0,
                    timestampAcquisitionStart=begin, timeout=DEADLINE, additionalKeys="",
                    additionalValues="")  # fmt: skip
        # Answered after it has taken the startIntegration (one connection, in order):
        # its deadline now runs.
        await headers.command("setLogLevel", {"level": 20})
        pid = site.pid("HeaderService")
        os.kill(pid, signal.SIGSTOP)
        try:
            await event("endReadout", imageIndex=1, imagesInSequence=1,
                        requestedExposureTime=0.0, timestampEndOfReadout=begin + 2,
                        sensors="R00_S00")  # fmt: skip
            await event("endOfImageTelemetry", timestampDateObs=begin,
                        timestampDateEnd=begin, exposureTime=0.0, darkTime=0.1,
                        measuredShutterOpenTime=0.0)  # fmt: skip
            await asyncio.sleep(PAUSE)  # the fault: paused while its deadline passes
        finally:
            os.kill(pid, signal.SIGCONT)
        header = await announced.wait_for(lambda e: e.data.id == IMAGE, timeout=15)
    assert header.data.byteSize > 0
    assert "exposure abandoned" not in site.log("HeaderService")
