"""ICD 1.1 "Missed announcements", as a night would have it: every CSC in its own
process (`cscs run`) on Mosquitto, nothing configured beyond the defaults.

An archiver SIGKILLed during the second of four images and started again after the
last ends with every sensor of every image archived once, verified, and with its
header (found where the header service writes, since nobody announced it to this
archiver). A header service killed instead, on a site with no EFD writer (nothing
recorded the night): every image it wrote a header for is archived with it, and the
others (there is none to be had) without. With an EFD writer they are rebuilt from the
EFD: tests/test_header_rebuild_process.py.

LATISS: what is missed is an image's header, one document whatever the number of
detectors it covers (a partly archived image finished by catch-up, and a header's
detector parts, are tested in test_archiver.py and test_archiver_parts.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cscs.archiver.interface import IMAGE_ARCHIVED
from cscs.camera.checksum import check_algorithm
from cscs.camera.events import END_READOUT
from cscs.camera.headers.paths import default_header_dir
from cscs.camera.naming import ImageName
from cscs.camera.verify import verify_raw_file
from cscs.catalog import ArchivedFile, Catalog, sqlite_url
from cscs.core.broker import EmbeddedBroker
from cscs.core.remote import Remote
from tests.support.process_site import ProcessSite, process_site

pytestmark = [pytest.mark.broker, pytest.mark.timeout(400)]

BIASES = {"expTime": 0.0, "shutter": False, "imageType": "BIAS"}
CAMERA = 1  # LATISS
SENSORS = 1


@contextmanager
def catalog_of(site: ProcessSite) -> Iterator[Catalog]:
    catalog = Catalog(sqlite_url(site.state / "archive" / "catalog.sqlite"))
    try:
        yield catalog
    finally:
        catalog.close()


async def take_killing(site: ProcessSite, images: int, victim: str) -> list[str]:
    """Take ``images`` biases; ``victim``'s process is SIGKILLed as the second is read
    out. The images' names."""
    async with (
        Remote(site.bus, site.address("Camera")) as camera,
        camera.events(END_READOUT) as ends,
    ):
        taking = asyncio.create_task(
            camera.command("takeImages", {"numImages": images, **BIASES}, timeout=180)
        )
        names = [(await ends.next(60)).data.imageName]
        names.append((await ends.next(60)).data.imageName)
        await site.kill(victim)
        await taking
        names += [(await ends.next(60)).data.imageName for _ in range(images - 2)]
    return names


async def until_archived(site: ProcessSite, names: list[str], *, with_headers: bool) -> None:
    """Until the catalog has every sensor of ``names`` (and, ``with_headers``, each with
    its header: the header document it was written with, however complete; this site
    has no telescope, so pointing keywords are missing), woken by each
    ``imageArchived``; 90 s at most."""

    def done() -> bool:
        with catalog_of(site) as catalog:
            rows = [row for name in names for row in catalog.files_of(name)]
        return len(rows) == SENSORS * len(names) and (
            not with_headers or all(row.header_url for row in rows)
        )

    archiver = Remote(site.bus, site.address("Archiver"))
    async with archiver, archiver.events(IMAGE_ARCHIVED) as archived, asyncio.timeout(90):
        while not await asyncio.to_thread(done):
            await archived.next(None)


def rows_of(site: ProcessSite, names: list[str]) -> list[ArchivedFile]:
    with catalog_of(site) as catalog:
        return [row for name in names for row in catalog.files_of(name)]


def check_files(site: ProcessSite, rows: list[ArchivedFile]) -> None:
    """Each row's file verifies (FITS checksums, size, the checksum catalogued), and the
    archive holds those files and nothing else of these images."""
    for row in rows:
        algorithm = check_algorithm(row.checksum_algorithm)
        assert verify_raw_file(Path(row.path), row.byte_size, row.checksum, algorithm) == []
    on_disk = {
        str(path) for row in rows for path in Path(row.path).parent.glob(f"{row.image_name}_*.fits")
    }
    assert on_disk == {row.path for row in rows}  # once each, nothing half-written
    assert not list((site.state / "archive").rglob("*.partial"))


@pytest.mark.long  # 7-17 s: the long tier keeps `make test` within 8 minutes
async def test_an_archiver_killed_during_a_night_ends_with_every_header(
    mosquitto: EmbeddedBroker, tmp_path: Path
) -> None:
    async with process_site(mosquitto, tmp_path / "state", index=CAMERA) as site:
        async with site.connected():
            names = await take_killing(site, 4, "Archiver")
            await site.start(site.address("Archiver"))  # catch-up runs as it is enabled
            await until_archived(site, names, with_headers=True)
        rows = rows_of(site, names)
        assert len({(row.image_name, row.sensor) for row in rows}) == SENSORS * 4
        check_files(site, rows)


@pytest.mark.long  # waits out the archiver's default 30 s header timeout: the long tier
async def test_a_header_service_killed_during_a_night_costs_only_the_headers_it_never_wrote(
    mosquitto: EmbeddedBroker, tmp_path: Path
) -> None:
    async with process_site(mosquitto, tmp_path / "state", index=CAMERA) as site:
        async with site.connected():
            names = await take_killing(site, 3, "HeaderService")
            await site.start(site.address("HeaderService"))
            await until_archived(site, names, with_headers=False)
        rows = rows_of(site, names)
        check_files(site, rows)
        written = default_header_dir(site.state, CAMERA)
        for row in rows:
            day_obs = ImageName.parse(row.image_name).day_obs
            header = written / day_obs / f"{row.image_name}.yaml"
            assert bool(row.header_url) == header.exists(), row.image_name
        assert rows[0].header_url  # before the kill
        assert not rows[-1].header_url  # after it: nobody wrote one
