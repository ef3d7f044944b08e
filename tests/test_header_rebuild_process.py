"""Headers rebuilt from the EFD, every CSC in its own process (`cscs run`) on Mosquitto,
with the EFD writer and its default store (SQLite under the state directory).

ComCam takes three images while its header service is SIGKILLed (then started again),
or SIGSTOPped through one image (then continued): every file ends with a complete
header, rebuilt from the EFD (``HDRSRC = 'EFD'``, catalogued ``efd``), whose values are
those the EFD's records give by the live rules (checked here independently: the mount's
position in force at the start, the highest wind during the exposure…).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits

from cscs.archiver.interface import IMAGE_ARCHIVED
from cscs.camera.checksum import check_algorithm
from cscs.camera.events import END_READOUT
from cscs.camera.headers.announcement import LARGE_FILE_OBJECT_AVAILABLE
from cscs.camera.verify import verify_raw_file
from cscs.catalog import ArchivedFile, Catalog, sqlite_url
from cscs.core.broker import EmbeddedBroker
from cscs.core.remote import Remote
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress, Kind
from cscs.efd.open import open_store
from cscs.efd.records import Measurement
from tests.support.process_site import ProcessSite, process_site
from tests.test_header_service import overhead

pytestmark = [
    pytest.mark.broker,
    pytest.mark.long,  # about 50 s each: processes, a slew, nine detectors three times
    pytest.mark.timeout(300),
]

CAMERA = 2  # ComCam: nine detectors
FROZEN = 10.0  # s past the second image's readout: beyond the broker's keepalive (7.5 s)
IMAGES = {"expTime": 1.0, "shutter": True, "imageType": "OBJECT", "keyValueMap": "reason:test"}


def catalogued(site: ProcessSite, names: list[str]) -> list[ArchivedFile]:
    catalog = Catalog(sqlite_url(site.state / "archive" / "catalog.sqlite"))
    try:
        return [row for name in names for row in catalog.files_of(name)]
    finally:
        catalog.close()


async def prepare(site: ProcessSite) -> None:
    """The EFD writer, then the telescope (so the EFD hears its retained events),
    pointing overhead with a filter in."""
    await site.start(CscAddress("EfdWriter", 0, site.prefix))
    telescope = site.address("Telescope")
    await site.spawn(telescope)
    async with Remote(site.bus, telescope) as remote:
        await remote.wait_for_state(State.STANDBY, timeout=60)
        await remote.command("start", {"configurationOverride": "fast"}, timeout=60)
        await remote.command("enable", timeout=60)
        ra, dec = overhead(current_tai() + 30.0)
        await remote.command("slew", {"ra": ra, "dec": dec, "rotatorAngle": 5.0,
                                      "object": "zenith", "program": "P"}, timeout=90)  # fmt: skip
        await remote.command("setFilter", {"filter": "r"}, timeout=30)
        async with remote.stream("dome", kind=Kind.TELEMETRY) as dome:
            for _ in range(5):  # the dome has caught up with the slew
                await dome.next(10)


async def take(
    site: ProcessSite, count: int, during: Callable[[int, str], Coroutine[Any, Any, None]]
) -> list[str]:
    """Take ``count`` images; ``during(n, name)`` is awaited as image ``n`` (from 0)
    starts reading out. The images' names."""
    async with (
        Remote(site.bus, site.address("Camera")) as camera,
        camera.events(END_READOUT) as ends,
    ):
        taking = asyncio.create_task(
            camera.command("takeImages", {"numImages": count, **IMAGES}, timeout=180)
        )
        names = []
        for n in range(count):
            names.append((await ends.next(90)).data.imageName)
            await during(n, names[-1])
        await taking
    return names


async def until_complete(
    site: ProcessSite, names: list[str], source: str | None = None
) -> list[ArchivedFile]:
    """Until every file of ``names`` is catalogued with a complete header (from
    ``source`` if given), woken by each ``imageArchived``; 150 s at most. The rows."""
    detectors = 9

    def done() -> list[ArchivedFile] | None:
        rows = catalogued(site, names)
        complete = [r for r in rows if r.header_complete and source in (None, r.header_source)]
        return rows if len(complete) == detectors * len(names) else None

    archiver = Remote(site.bus, site.address("Archiver"))
    async with archiver, archiver.events(IMAGE_ARCHIVED) as archived:
        try:
            async with asyncio.timeout(150):
                while (rows := await asyncio.to_thread(done)) is None:
                    await archived.next(None)
        except TimeoutError:
            rows = catalogued(site, names)
            summary = sorted({(r.image_name, r.header_source, r.missing_keywords) for r in rows})
            raise AssertionError(f"not every file rebuilt: {summary}") from None
    return rows


def check_against_the_efd(site: ProcessSite, rows: list[ArchivedFile]) -> None:
    """Each file verifies, says HDRSRC = 'EFD', and its collected values are those the
    EFD's records give by the live rules (computed here, not by the code under test)."""
    store = open_store(Settings(state_dir=site.state).efd)
    try:
        for row in rows:
            algorithm = check_algorithm(row.checksum_algorithm)
            assert verify_raw_file(Path(row.path), row.byte_size, row.checksum, algorithm) == []
            with fits.open(row.path) as hdus:
                header = hdus[0].header
            assert header["HDRSRC"] == "EFD"
            start = header["MJD-BEG"]
            starts = store.records(
                [Measurement("Camera", Kind.EVENT, "startIntegration")], 0, 3e9, index=CAMERA
            )
            start_tai = next(r.sent_tai for r in starts if r.fields["imageName"] == row.image_name)
            ends = store.records(
                [Measurement("Camera", Kind.EVENT, "endOfImageTelemetry")], start_tai,
                start_tai + 120, index=CAMERA,
            )  # fmt: skip
            end_tai = next(r.sent_tai for r in ends if r.fields["imageName"] == row.image_name)
            mount = store.records([Measurement("Telescope", Kind.TELEMETRY, "mount")], 0,
                                  start_tai, index=CAMERA, limit=1, newest_first=True)  # fmt: skip
            assert header["RASTART"] == pytest.approx(mount[0].fields["ra"], abs=1e-9)
            weather = Measurement("Weather", Kind.TELEMETRY, "weather")
            before = store.records([weather], 0, start_tai, index=0, limit=1, newest_first=True)
            during = store.records([weather], start_tai, end_tai, index=0)
            winds = [float(r.fields["windSpeed"] or 0.0) for r in before + during]
            assert header["WINDSPD"] == pytest.approx(max(winds), abs=1e-9)
            last = store.records([weather], 0, end_tai, index=0, limit=1, newest_first=True)
            assert header["AIRTEMP"] == pytest.approx(last[0].fields["temperature"], abs=1e-9)
            assert header["FILTBAND"] == "r"
            assert start > 0
    finally:
        store.close()


async def test_a_header_service_killed_through_three_images_leaves_every_header_rebuilt(
    mosquitto: EmbeddedBroker, tmp_path: Path
) -> None:
    async with process_site(mosquitto, tmp_path / "state", index=CAMERA) as site:
        async with site.connected():
            await prepare(site)
            await site.kill("HeaderService")

            async def nothing(_: int, __: str) -> None:
                pass

            names = await take(site, 3, nothing)
            await site.start(site.address("HeaderService"))  # rebuilds at enable
            rows = await until_complete(site, names, "efd")
        check_against_the_efd(site, rows)


async def test_a_header_service_frozen_through_one_image_ends_with_every_header(
    mosquitto: EmbeddedBroker, tmp_path: Path
) -> None:
    """Frozen past the broker's keepalive through the second image: what it missed is
    rebuilt from the EFD (once its incomplete header is out, or at the archiver's ask)."""
    async with process_site(mosquitto, tmp_path / "state", index=CAMERA) as site:
        async with site.connected():
            await prepare(site)
            pid = site.pid("HeaderService")
            service = Remote(site.bus, site.address("HeaderService"))
            async with service, service.events(LARGE_FILE_OBJECT_AVAILABLE) as headers:

                async def freeze_through_the_second(n: int, name: str) -> None:
                    if n == 0:  # once the first image's header is out
                        await headers.wait_for(lambda h: h.data.id == name, 60)
                        os.kill(pid, signal.SIGSTOP)
                    elif n == 1:
                        await asyncio.sleep(FROZEN)
                        os.kill(pid, signal.SIGCONT)

                names = await take(site, 3, freeze_through_the_second)
            rows = await until_complete(site, names)
        sources = {row.image_name: row.header_source for row in rows}
        assert sources[names[0]] == "live"
        # The second: rebuilt from the EFD when the broker dropped the frozen service
        # and its telemetry with it; or complete live, when what the broker had sent
        # before it gave up (the image's events and telemetry, in order) was still
        # waiting in the socket as the process resumed. Both end complete (until_complete).
        assert sources[names[1]] in ("live", "efd")
        check_against_the_efd(site, [row for row in rows if row.header_source == "efd"])
