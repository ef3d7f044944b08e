"""Issue 29, item 7: archived files the FITS standard accepts, whatever telemetry is
missing. A ComCam night's images with the simulated telescope stopped mid-night: the
headers then lack ROTPA, so the celestial WCS cannot be computed; its keywords, which
the standard types, are left out of the files (listed in ``missingKeywords``, noted in
a COMMENT), never written without a value, and fitsverify accepts every file.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from astropy.io import fits

from cscs.archiver.interface import IMAGE_ARCHIVED, ImageArchived
from cscs.camera.geometry import camera_for_index
from cscs.camera.headers.announcement import (
    LARGE_FILE_OBJECT_AVAILABLE,
    LargeFileObjectAvailable,
)
from cscs.core.broker import EmbeddedBroker
from cscs.core.remote import ParsedStream, Remote
from sim.ocs.telescope import MOUNT
from tests.support.fitsverify import assert_fitsverify_clean
from tests.support.process_site import process_site

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

COMCAM = 2
BIAS = {"numImages": 1, "expTime": 0.0, "shutter": False, "imageType": "BIAS"}


async def _take(
    camera: Remote,
    announced: ParsedStream[LargeFileObjectAvailable],
    archived: ParsedStream[ImageArchived],
) -> tuple[str, str, list[Path]]:
    """One image: its name, the keywords its header lacks, and all its files."""
    ack = await camera.command("takeImages", BIAS, timeout=90)
    image = ack.result.split()[-1]
    header = await announced.wait_for(lambda e: e.data.id == image, 60)
    sensors = len(camera_for_index(COMCAM).detectors)
    files: dict[str, Path] = {}
    while len(files) < sensors:
        event = await archived.wait_for(lambda e: e.data.imageName == image, 90)
        assert event.data.statusCode == 0, event.data.description
        files[event.data.sensor] = Path(urlparse(event.data.url).path)
    return image, header.data.missingKeywords, list(files.values())


@pytest.mark.long  # five ComCam images through a stopped telescope, ~25 s: the long tier
async def test_every_file_of_comcam_images_with_the_telescope_stopped_midnight_is_fits(
    mosquitto: EmbeddedBroker, tmp_path: Path
) -> None:
    async with process_site(mosquitto, tmp_path / "state", COMCAM) as site, site.connected():
        await site.start(site.address("Telescope"))
        async with Remote(site.bus, site.address("Telescope")) as telescope:
            await telescope.next(MOUNT, timeout=30)  # the header service hears it too
        camera = Remote(site.bus, site.address("Camera"))
        archiver = Remote(site.bus, site.address("Archiver"))
        headers = Remote(site.bus, site.address("HeaderService"))
        async with (
            camera, archiver, headers,
            archiver.events(IMAGE_ARCHIVED) as archived,
            headers.events(LARGE_FILE_OBJECT_AVAILABLE) as announced,
        ):  # fmt: skip
            before = [await _take(camera, announced, archived) for _ in range(1)]
            await site.kill("Telescope")  # mid-night: no mount sample from now on
            after = [await _take(camera, announced, archived)]
            while "WCSAXES" not in after[-1][1].split(","):  # its last sample goes stale
                assert len(after) < 10, [missing for _, missing, _ in after]
                after.append(await _take(camera, announced, archived))
            after.append(await _take(camera, announced, archived))

    assert ["WCSAXES" in missing.split(",") for _, missing, _ in before] == [False], before
    stopped = fits.getheader(after[-1][2][0])
    assert "WCSAXES" not in stopped
    assert "CRVAL1" not in stopped
    notes = " ".join(str(c) for c in stopped["COMMENT"])
    assert "WCSAXES" in notes
    assert "ROTPA" in notes  # why: no rotator angle
    assert "WCSAXES" in fits.getheader(before[0][2][0])  # with the telescope: a WCS
    files = [path for *_, paths in before + after for path in paths]
    archive = sorted((tmp_path / "state").rglob("*.fits"))
    assert sorted(files) == archive  # every file of the night, nothing else
    assert assert_fitsverify_clean(archive) == len(files)
