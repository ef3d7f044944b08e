"""Rebuilding one camera's headers from the EFD: the queries, the replay, the document.

Over the exposure's own span, as the live service heard it: the image's camera events
(found by ``imageName`` in its dayObs), then for every source of the keyword map the
last message sent at or before the start (the value in force: an event never ages, a
telemetry value is judged by its ``max_age`` as live) and every message up to the last
moment, and the camera's newest ``focalPlaneSummaryInfo`` by then. The steps go through
:func:`~cscs.header_service.collect.replay` and the document is made by
:func:`~cscs.header_service.making.make_header`: the live service's own rules, with
``HDRSRC = 'EFD'``. What the EFD does not have stays missing, with the reason.

Blocking (the store, the file system): :class:`EfdHeaders` runs in one worker thread
of the header service's (:mod:`~cscs.header_service.rebuilder`).
"""

from __future__ import annotations

import calendar
import hashlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cscs.camera import files
from cscs.camera.events import StartIntegration
from cscs.camera.geometry import Camera
from cscs.camera.headers.announcement import MAX_HEADER_DOCUMENT_BYTES
from cscs.camera.headers.yaml_codec import parse_header_document
from cscs.camera.naming import ImageName
from cscs.core.tai import tai_minus_utc
from cscs.efd.records import EfdRecord
from cscs.efd.store import EfdStore
from cscs.header_service.collect import KeywordRule, SourceKey, Step, replay
from cscs.header_service.document import RenderedHeader
from cscs.header_service.efd_timeline import (
    IMAGE_EVENTS,
    camera_measurement,
    hardware_of,
    image_events,
    source_measurement,
    source_steps,
    starts_of,
    timeline,
)
from cscs.header_service.making import make_header
from cscs.header_service.paths import header_path

__all__ = ["Cursor", "EfdHeaders", "Outcome", "Status", "exposure_wait", "supplies_more"]

LONGEST_WAIT = 3600.0  # s: an exposure's end is looked for no later than this after start
MAX_SAMPLES = 200_000  # messages of one source over one exposure (10 Hz for 5 h)
_DAY_MARGIN = 3600.0  # s: clocks and late publishers around a dayObs's noon-to-noon
_DAY = re.compile(r"[0-9]{8}")
_HARDWARE_TRIES = 20  # newest focalPlaneSummaryInfo records looked at for a valid one

Start = tuple[float, StartIntegration]  # an image's startIntegration and its sent_tai
Status = Literal["rebuilt", "complete", "unchanged", "not-in-efd", "not-ended", "live", "unusable"]


@dataclass(frozen=True)
class Outcome:
    image: str
    status: Status
    detail: str = ""
    document: RenderedHeader | None = None
    url: str = ""  # file:// of the document written (or there, when complete)
    rebuilt: bool = True  # the document is one rebuilt from the EFD (HDRSRC = 'EFD')


#: Where a page of raw records ended: (``sent_tai``, ``seq``) of its last record.
Cursor = tuple[float, int]
_LOWEST_SEQ = -(2**63)


def exposure_wait(timeout: float) -> float:
    """How long after its start an image's end is looked for: as live, its
    ``startIntegration.timeout`` (60 s if not positive), at most an hour."""
    return min(timeout, LONGEST_WAIT) if timeout > 0 else 60.0


def supplies_more(existing: tuple[str, ...] | None, rebuilt: tuple[str, ...]) -> bool:
    """Whether a rebuilt header (missing ``rebuilt``) is worth writing over the document
    there (missing ``existing``; None: no document): only if what it lacks is a strict
    subset of what that one lacks. Fewer is not enough: a rebuilt header missing {A}
    over a live one missing {B, C} would drop the live value of A."""
    return existing is None or set(rebuilt) < set(existing)


def day_window(day: str) -> tuple[float, float]:
    """The TAI span of a dayObs (noon to noon), with a margin each side."""
    noon = calendar.timegm(time.strptime(day, "%Y%m%d")) + 12 * 3600.0
    return noon - _DAY_MARGIN, noon + 86400.0 + _DAY_MARGIN


class EfdHeaders:
    """Rebuilds the headers of ``camera`` (service index ``index``) from ``store``."""

    def __init__(
        self,
        store: EfdStore,
        camera: Camera,
        index: int,
        rules: list[KeywordRule],
        output_dir: Path,
        *,
        generator: str,
        version: str,
    ) -> None:
        self.store = store
        self.camera = camera
        self.index = index
        self.rules = rules
        self.output_dir = output_dir
        self.generator = generator
        self.version = version
        self._detectors = frozenset(d.name for d in camera.detectors)
        self._fields: dict[SourceKey, set[str]] = {}
        for rule in rules:
            self._fields.setdefault(rule.key(index), set()).add(rule.field)

    # ---- which images -----------------------------------------------------------------

    def starts(self, begin: float, end: float, limit: int | None = None) -> dict[str, Start]:
        """The camera's images started from ``begin`` to ``end`` (TAI), oldest first, at
        most ``limit``: image -> (start TAI, startIntegration)."""
        records = self.store.records(
            [camera_measurement("startIntegration")], begin, end, index=self.index, limit=limit
        )
        return starts_of(records, self.camera.code)

    def start_page(
        self, begin: float, end: float, limit: int, after: Cursor | None = None
    ) -> tuple[dict[str, Start], Cursor | None]:
        """A page of the camera's images started from ``begin`` to ``end``: of the next
        ``limit`` raw ``startIntegration`` records strictly after the record ``after``
        (valid or not, this camera's or not: a page of junk or repeats does not end a
        pass), and the cursor for the next page (None: this was the last one)."""
        low = begin if after is None else max(begin, after[0])
        records = self.store.records(
            [camera_measurement("startIntegration")], low, end, index=self.index, limit=limit
        )
        fresh = [r for r in records if after is None or (r.sent_tai, r.seq) > after]
        if len(records) < limit:
            return starts_of(fresh, self.camera.code), None
        if not fresh:  # a whole page sent at one instant, all seen: go past that instant
            assert after is not None
            return {}, (math.nextafter(after[0], math.inf), _LOWEST_SEQ)
        return starts_of(fresh, self.camera.code), max((r.sent_tai, r.seq) for r in fresh)

    def starts_of_day(self, day: str) -> dict[str, Start]:
        """The camera's images of dayObs ``day`` in the EFD."""
        return self.starts(*day_window(day))

    def path(self, image: str) -> Path:
        return header_path(self.output_dir, image)

    def last_header_time(self) -> float | None:
        """When this service last wrote a header (the newest document of its newest
        dayObs directory), as TAI; None if it has none."""
        try:
            days = sorted(p for p in self.output_dir.iterdir() if _DAY.fullmatch(p.name))
            for day in reversed(days):
                times = [p.stat().st_mtime for p in day.glob("*.yaml") if p.is_file()]
                if times:
                    return max(times) + tai_minus_utc(max(times))
        except OSError:
            return None
        return None

    def existing(self, image: str) -> tuple[RenderedHeader, bool] | None:
        """The document there (its bytes, MD5, missing keywords) and whether it was
        rebuilt from the EFD; None if there is none (or none that can be read: a
        rebuild replaces it)."""
        try:
            with self.path(image).open("rb") as stream:
                data = stream.read(MAX_HEADER_DOCUMENT_BYTES + 1)
            document = parse_header_document(data)
        except (OSError, ValueError):
            return None
        missing = tuple(m.keyword for m in document.missing)
        rebuilt = any(c.keyword == "HDRSRC" and c.value == "EFD" for c in document.primary)
        return RenderedHeader(data, hashlib.md5(data).hexdigest(), missing), rebuilt

    # ---- one image --------------------------------------------------------------------

    def rebuild(self, image: str, known: Start | None = None) -> Outcome:
        """Rebuild ``image``'s header if it has none, or one lacking keywords the EFD
        can supply; written atomically where the live one goes. ``known``: its start,
        if the caller found it already (:meth:`starts_of_day`)."""
        there = self.existing(image)
        if there is not None and not there[0].missing:
            return self._kept(image, "complete", "", there)
        start = known or self.starts_of_day(ImageName.parse(image).day_obs).get(image)
        if start is None:
            return Outcome(image, "not-in-efd", "no startIntegration of it in the EFD")
        return self._rebuild(image, start[0], start[1], there)

    def _kept(
        self, image: str, status: Status, detail: str, there: tuple[RenderedHeader, bool]
    ) -> Outcome:
        """The document there is kept: the outcome carries it (to announce it again)."""
        url = self.path(image).resolve().as_uri()
        return Outcome(image, status, detail, there[0], url, rebuilt=there[1])

    def _rebuild(
        self,
        image: str,
        start_tai: float,
        start: StartIntegration,
        there: tuple[RenderedHeader, bool] | None,
    ) -> Outcome:
        until = start_tai + exposure_wait(start.timeout)
        measurements = [camera_measurement(e) for e in IMAGE_EVENTS[1:]]
        records = self.store.records(measurements, start_tai, until, index=self.index)
        events = image_events(start_tai, start, records, self._detectors)
        if not events.ended:
            return Outcome(image, "not-ended", "its endOfImageTelemetry is not in the EFD (yet)")
        last = events.last
        steps: list[Step] = []
        for key, names in self._fields.items():
            steps += source_steps(key, self._samples(key, start_tai, last), names)
        exposure = replay(start, self.rules, self.index, timeline(events, steps))
        if not exposure.complete:
            exposure.give_up("not in the EFD")
        focal = self.store.records(
            [camera_measurement("focalPlaneSummaryInfo")], 0.0, last, index=self.index,
            limit=_HARDWARE_TRIES, newest_first=True,
        )  # fmt: skip
        document = make_header(
            self.camera, exposure, hardware_of(focal, self._detectors),
            camera_source=f"Camera:{self.index}", generator=self.generator,
            version=self.version, origin="EFD",
        )  # fmt: skip
        if there is not None and not supplies_more(there[0].missing, document.missing):
            why = f"the EFD lacks {len(document.missing)} keyword(s), not a subset of those lacking"
            return self._kept(image, "unchanged", f"{why}: {','.join(document.missing)[:200]}",
                              there)  # fmt: skip
        path = self.path(image)
        files.write_atomically(path, document.data)
        url = path.resolve().as_uri()
        return Outcome(image, "rebuilt", ",".join(document.missing), document, url)

    def _samples(self, key: SourceKey, start_tai: float, last: float) -> list[EfdRecord]:
        """The value in force at the start, then every message up to ``last``."""
        measurement = source_measurement(key)
        before = self.store.records(
            [measurement], 0.0, start_tai, index=key.index, limit=1, newest_first=True
        )
        during = self.store.records(
            [measurement], start_tai, last, index=key.index, limit=MAX_SAMPLES
        )
        return before + during
