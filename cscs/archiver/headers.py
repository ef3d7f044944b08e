"""Where the archiver gets each image's header, and how it checks one.

Headers come announced (``largeFileObjectAvailable``): each announcement is kept, its
document fetched once, checked against the announced MD5 and size, parsed with the
shared declaration (:mod:`cscs.camera.headers`) and kept. An image whose announcement
was never heard (the archiver was down) may still have its header where the header
service writes it: ``header_url_template`` says where to look. Every cache is bounded
(a night's worth), and no failure here stops an image: a header that cannot be had is
``None``, and the file is archived without it (completed later if it comes).

A keyword the FITS standard types (:func:`~cscs.camera.headers.cards.requires_value`)
never reaches a file without a value: a header service leaves such a keyword out when it
could not collect it; a document that still gives one undefined (an older header service,
or anyone's) has that card dropped here. Either way the keyword is listed as missing and
:meth:`Header.notes` says in a ``COMMENT`` why it is not there.

Anyone can announce any URL, so a document is read only as :class:`HeaderTrust` allows:
from the trusted directories (the archiver's ``header_roots``; by default where the
header services write, and the directory of ``header_url_template``), only from a
regular file, never more than ``max_header_bytes`` (:func:`read_header_document`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from cscs.camera.fits import Card
from cscs.camera.headers.announcement import LargeFileObjectAvailable
from cscs.camera.headers.cards import requires_value
from cscs.camera.headers.document import HeaderCard, HeaderDocument
from cscs.camera.headers.reading import HeaderTrust, read_header_document
from cscs.camera.naming import ImageName
from cscs.core.settings import default_state_dir, settings_from_env

__all__ = ["Header", "HeaderSource", "fetch_header", "header_of"]

REMEMBERED = 10_000  # images per cache: more than a night's
_COMMENT_LENGTH = 47  # what fits on a FITS card beside a short value


@dataclass(frozen=True)
class Header:
    """A header document, fetched and checked, as FITS cards."""

    url: str
    md5: str
    primary: list[Card]
    detectors: dict[str, list[Card]]
    segments: dict[str, list[Card]]
    missing: str  # comma-separated keywords the header service could not collect
    left_out: tuple[tuple[str, str], ...] = ()
    """Missing keywords the standard types, so not in the file at all: (keyword, why)."""
    source: str = "live"
    """Where its values came from, as the catalog records it: ``live`` (collected during
    the exposure) or ``efd`` (rebuilt afterwards from the EFD: ``HDRSRC = 'EFD'``)."""

    @property
    def missing_count(self) -> int:
        return len([k for k in self.missing.split(",") if k])

    def exposure_start(self) -> float | None:
        """TAI (Unix seconds) of the exposure's start, from ``MJD-OBS``."""
        for keyword, value, _ in self.primary:
            if keyword == "MJD-OBS" and isinstance(value, float):
                return (value - 40587.0) * 86400.0
        return None

    def notes(self, cards: list[Card]) -> list[Card]:
        """``COMMENT`` cards for the keywords left out of a file whose cards are
        ``cards``: one per reason, naming the keywords (a reader sees why WCSAXES and
        its like are absent, not only that they are)."""
        present = {keyword for keyword, _, _ in cards}
        by_reason: dict[str, list[str]] = {}
        for keyword, reason in self.left_out:
            if keyword not in present:
                by_reason.setdefault(reason, []).append(keyword)
        return [
            ("COMMENT", f"Not collected, so left out: {', '.join(keys)}. Why: {why}"[:600], "")
            for why, keys in by_reason.items()
        ]


def _cards(entries: list[HeaderCard], left_out: dict[str, str]) -> list[Card]:
    """FITS cards of ``entries``; an undefined keyword the standard types is dropped
    and added to ``left_out``."""
    cards: list[Card] = []
    for c in entries:
        if c.value is None and requires_value(c.keyword):
            left_out.setdefault(c.keyword, "the header document gives it no value")
        else:
            cards.append((c.keyword, c.value, c.comment[:_COMMENT_LENGTH]))
    return cards


def header_of(url: str, md5: str, document: HeaderDocument) -> Header:
    """The FITS cards of a checked document, none undefined where the standard types
    the value."""
    left_out = {m.keyword: m.reason for m in document.missing if requires_value(m.keyword)}
    primary = _cards(document.primary, left_out)
    detectors = {name: _cards(cards, left_out) for name, cards in document.detectors.items()}
    segments = {name: _cards(cards, left_out) for name, cards in document.segments.items()}
    missing = list(dict.fromkeys([*(m.keyword for m in document.missing), *left_out]))
    origin = next((c.value for c in document.primary if c.keyword == "HDRSRC"), "live")
    return Header(url, md5, primary, detectors, segments, ",".join(missing),
                  tuple(left_out.items()), "efd" if origin == "EFD" else "live")  # fmt: skip


def fetch_header(
    url: str, image: str, announced: LargeFileObjectAvailable | None, trust: HeaderTrust
) -> Header:
    """Fetch and check one header document as FITS cards (blocking: run it in a thread);
    the errors of :func:`~cscs.camera.headers.reading.read_header_document`."""
    document, md5 = read_header_document(url, image, announced, trust)
    return header_of(url, md5, document)


def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > REMEMBERED:
        cache.popitem(last=False)


def _environment_state_dir() -> Path:
    try:
        return settings_from_env().state_directory
    except ValueError:  # a CSC could not have started with such an environment
        return default_state_dir()


class HeaderSource:
    """The headers of the images being archived: announced, fetched, checked, kept.

    ``trust``: where documents may be read from and how big; the archiver sets it from
    its configuration (``ArchiverConfig.header_trust``). Until it does, the default is
    computed here: ``$CSCS_STATE_DIR/headers`` (from the environment, as ``cscs run``
    gives the CSC its state directory) and the directory of ``template``.
    """

    def __init__(
        self, log: FilteringBoundLogger, template: str = "", *, trust: HeaderTrust | None = None
    ) -> None:
        self.template = template
        self.trust = trust
        self._log = log
        self._announced: OrderedDict[str, LargeFileObjectAvailable] = OrderedDict()
        self._headers: OrderedDict[str, Header] = OrderedDict()  # fetched and checked
        self._gave_up: OrderedDict[str, bool] = OrderedDict()  # waited for in vain
        self._arrived: dict[str, asyncio.Event] = {}

    def announce(self, announcement: LargeFileObjectAvailable) -> None:
        """A header was announced (again, perhaps: the newest announcement wins)."""
        image = announcement.id
        _remember(self._announced, image, announcement)
        self._headers.pop(image, None)
        self._gave_up.pop(image, None)
        arrived = self._arrived.get(image)
        if arrived is not None:
            arrived.set()

    def is_announced(self, image: str) -> bool:
        return image in self._announced

    def forget_fetched(self, image: str) -> None:
        """Read ``image``'s header again when next asked (catch-up: a header rebuilt
        while this archiver was not listening replaces the one fetched before)."""
        self._headers.pop(image, None)
        self._gave_up.pop(image, None)

    async def get(self, image: str, *, wait: float) -> Header | None:
        """The image's header, checked, or None (archive without it).

        ``wait``: seconds to wait for an announcement not heard yet; 0 for images long
        past (catch-up), whose header completes their files whenever it comes. The
        other sensors of an image whose header was waited for in vain do not wait again.
        """
        if image in self._headers:
            return self._headers[image]
        announcement = self._announced.get(image)
        if announcement is None:
            found = await self._unannounced(image)
            if found is not None or image in self._gave_up or wait <= 0:
                return found
            announcement = await self._wait_for_announcement(image, wait)
            if announcement is None:
                return None
        url, trust = announcement.url, self._trust()
        try:
            header = await asyncio.to_thread(fetch_header, url, image, announcement, trust)
        except (OSError, ValueError) as exc:
            # Replaced since it was announced (rebuilt from the EFD, its announcement
            # missed)? The one where the header service writes, if there is one. The
            # announcement is said to be unusable either way: it may be a forgery.
            replaced = await self._unannounced(image)
            instead = replaced.url if replaced else "archiving without it"
            self._log.error("announced header unusable", image=image, error=str(exc),
                            instead=instead)  # fmt: skip
            return replaced
        _remember(self._headers, image, header)
        return header

    def _trust(self) -> HeaderTrust:
        if self.trust is not None:
            return self.trust
        try:
            return HeaderTrust.of(_environment_state_dir(), self.template)
        except ValueError:  # a bad template: configuration refuses it; trust none of it
            return HeaderTrust.of(_environment_state_dir())

    async def _wait_for_announcement(
        self, image: str, wait: float
    ) -> LargeFileObjectAvailable | None:
        arrived = self._arrived.setdefault(image, asyncio.Event())
        if image in self._announced:  # came while the caller looked elsewhere (a thread
            arrived.set()  # hop to the template's directory): no wake-up is lost
        try:
            async with asyncio.timeout(wait):
                await arrived.wait()
        except TimeoutError:
            self._log.warning("no header in time; archiving without it", image=image)
            _remember(self._gave_up, image, True)
            return None
        finally:
            self._arrived.pop(image, None)
        return self._announced.get(image)

    async def _unannounced(self, image: str) -> Header | None:
        """A header announced before this archiver listened, where the template says."""
        if not self.template:
            return None
        try:
            url = self.template.format(day_obs=ImageName.parse(image).day_obs, image=image)
        except (KeyError, IndexError, ValueError) as exc:
            self._log.warning("no header URL for this image", image=image, error=repr(exc))
            return None
        try:
            header = await asyncio.to_thread(fetch_header, url, image, None, self._trust())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._log.warning("header at the template URL unusable", image=image, error=str(exc))
            return None
        self._log.info("found a header announced before this archiver listened",
                       image=image, url=url)  # fmt: skip
        _remember(self._headers, image, header)
        return header
