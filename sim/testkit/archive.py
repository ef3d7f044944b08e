"""The archive as a test sees it: which images were read out, which of their files were
archived, and whether each file is whole.

:class:`ArchiveWatch` follows the camera's ``endReadout`` (which sensors each image has)
and the archiver's ``imageArchived`` / ``imageRetrievalFailed`` from the moment it is
entered, so an image taken after that is never missed, however fast it is archived.
:meth:`ArchiveWatch.verified` then waits for every sensor of one image and checks each
file as a user of the archive relies on: re-read from disk with its FITS checksums, its
size and file checksum as announced, and its catalog row saying the same; and, asked
to (``fitsverify=True``: a process per image, for the system tier), HEASARC's fitsverify
finding nothing the FITS standard refuses (:mod:`sim.testkit.fitsverify`).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import TracebackType
from urllib.parse import urlparse

from cscs.archiver.interface import IMAGE_ARCHIVED, IMAGE_RETRIEVAL_FAILED, ImageArchived
from cscs.camera.events import END_READOUT, EndReadout
from cscs.camera.verify import verify_raw_file
from cscs.catalog import Catalog, sqlite_url
from cscs.core.remote import EventStream, ParsedStream, Remote
from sim.testkit.fitsverify import fitsverify_problems

__all__ = ["ArchiveWatch", "NotArchivedError"]


class NotArchivedError(AssertionError):
    """An image's files were not all archived whole: each problem a sentence. An
    AssertionError, so that pytest shows it as a failed check, not as an error."""


class ArchiveWatch:
    """The archive at ``root`` (catalog ``{root}/catalog.sqlite``), as ``camera`` and
    ``archiver`` announce it; use with ``async with``."""

    def __init__(
        self, root: Path, camera: Remote, archiver: Remote, *, fitsverify: bool = False
    ) -> None:
        self.root = root
        self.fitsverify = fitsverify
        self._camera = camera
        self._archiver = archiver
        self._stack = contextlib.AsyncExitStack()
        self._readouts: ParsedStream[EndReadout] | None = None
        self._events: EventStream | None = None
        self._sensors: dict[str, list[str]] = {}  # image -> sensors read out
        self._archived: dict[str, dict[str, ImageArchived]] = {}  # image -> sensor -> event
        self._failed: dict[str, list[str]] = {}  # image -> why

    async def __aenter__(self) -> ArchiveWatch:
        async with contextlib.AsyncExitStack() as stack:
            self._readouts = await stack.enter_async_context(self._camera.events(END_READOUT))
            self._events = await stack.enter_async_context(self._archiver.stream())
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def read_out(self, count: int = 1, timeout: float | None = 60.0) -> list[str]:
        """The next ``count`` images read out since this watch began (or since the last
        call), in order: their names."""
        if self._readouts is None:
            raise RuntimeError("use `async with ArchiveWatch(...)`")
        names = []
        for _ in range(count):
            end = (await self._readouts.next(timeout)).data
            self._sensors[end.imageName] = [s for s in end.sensors.split(",") if s]
            names.append(end.imageName)
        return names

    async def verified(self, image: str, timeout: float = 60.0) -> list[ImageArchived]:
        """Every file of ``image``, once all are archived, each re-read and verified
        (FITS checksums, size, file checksum, catalog row); their ``imageArchived``, by
        sensor. NotArchivedError if any file is missing, failed or damaged; TimeoutError
        if the image was not read out, or its files not archived, within ``timeout``."""
        async with asyncio.timeout(timeout):
            while image not in self._sensors:
                await self.read_out(1, timeout=None)
            sensors = self._sensors[image]
            while not self._complete(image, sensors):
                await self._next_archiver_event()
        if image in self._failed:
            raise NotArchivedError(f"{image}: " + "; ".join(self._failed[image]))
        files = [self._archived[image][sensor] for sensor in sorted(sensors)]
        problems = await asyncio.to_thread(self._problems, files)
        if self.fitsverify:
            problems += await asyncio.to_thread(_fitsverify, files)
        if problems:
            raise NotArchivedError("\n".join(problems))
        return files

    def _complete(self, image: str, sensors: list[str]) -> bool:
        return image in self._failed or set(sensors) <= set(self._archived.get(image, {}))

    async def _next_archiver_event(self) -> None:
        assert self._events is not None
        received = await self._events.next(None)
        if received.name == IMAGE_ARCHIVED.name:
            archived = received.parse(IMAGE_ARCHIVED).data
            self._archived.setdefault(archived.imageName, {})[archived.sensor] = archived
        elif received.name == IMAGE_RETRIEVAL_FAILED.name:
            failed = received.parse(IMAGE_RETRIEVAL_FAILED).data
            why = f"{failed.sensor}: {failed.description}"
            self._failed.setdefault(failed.imageName, []).append(why)

    def _problems(self, files: list[ImageArchived]) -> list[str]:
        """What is wrong with each file (blocking: it reads them)."""
        problems: list[str] = []
        catalog = Catalog(sqlite_url(self.root / "catalog.sqlite"))
        try:
            for event in files:
                path = Path(urlparse(event.url).path)
                problems += verify_raw_file(
                    path, event.byteSize, event.checkSum, event.checkSumAlgorithm
                )
                row = catalog.lookup(event.imageName, event.sensor)
                if row is None:
                    problems.append(f"{path}: not in the catalog")
                elif (row.path, row.byte_size, row.checksum) != (
                    str(path),
                    event.byteSize,
                    event.checkSum,
                ):
                    problems.append(f"{path}: the catalog says otherwise: {row}")
        finally:
            catalog.close()
        return problems


def _fitsverify(files: list[ImageArchived]) -> list[str]:
    """fitsverify's findings; the test skipped, saying why, where it is not installed."""
    found = fitsverify_problems(Path(urlparse(event.url).path) for event in files)
    if found is None:
        import pytest  # the test kit's own dependency; only a test asks for fitsverify

        pytest.skip("fitsverify is not installed (Debian package fitsverify)")
    return found
