"""Which images the archiver asks its header service to rebuild from the EFD, and when.

A file still without a complete header ``header_rebuild_after`` seconds after it was
archived (the header service was down, or restarted with an empty cache) is asked for
with ``rebuildHeaders`` (:mod:`cscs.camera.headers.rebuild`), a few times, backing off
(:class:`~cscs.core.backoff.Backoff`); the files are completed when the rebuilt header
is announced, as for any late header. Pure (no I/O): catch-up gives it the images still
incomplete and the time, and sends what it answers. Bounded: an image is forgotten once
its files are complete; at most :data:`REMEMBERED` are tracked, and an image asked for
its last time leaves them for a bounded memory of those given up (the oldest forgotten
first: asked again, at worst), so images the EFD cannot complete either never keep new
ones from being asked. :attr:`RebuildRequests.full` says when a new one had no room.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from cscs.core.backoff import Backoff

__all__ = ["REMEMBERED", "RebuildRequests"]

REMEMBERED = 10_000  # images tracked at once: more than a night's
ATTEMPTS = 3  # times one image is asked for


@dataclass
class _Asked:
    backoff: Backoff
    due: float


class RebuildRequests:
    def __init__(self, attempts: int = ATTEMPTS, remembered: int = REMEMBERED) -> None:
        self.attempts = attempts
        self.remembered = remembered
        self._asked: dict[str, _Asked] = {}
        self._gave_up: OrderedDict[str, None] = OrderedDict()
        self.full = False  # the last call left a new image out: no room to track it

    def __len__(self) -> int:
        return len(self._asked) + len(self._gave_up)

    def due(
        self, incomplete: Mapping[str, float], now: float, after: float, limit: int
    ) -> list[str]:
        """The images to ask for now, oldest first, at most ``limit``: of ``incomplete``
        (image -> when its first file was archived, TAI), those archived more than
        ``after`` seconds ago (0: never ask) and not asked :attr:`attempts` times yet,
        each again only once its back-off (``after``, 4 ``after``, …) has passed."""
        for image in [i for i in self._asked if i not in incomplete]:
            del self._asked[image]  # complete now (or no longer in the catalog)
        for image in [i for i in self._gave_up if i not in incomplete]:
            del self._gave_up[image]
        self.full = False
        if after <= 0:
            return []
        chosen: list[str] = []
        for image, archived in sorted(incomplete.items(), key=lambda item: item[1]):
            if len(chosen) >= limit:
                break
            asked = self._asked.get(image)
            if asked is None:
                if now - archived < after or image in self._gave_up:
                    continue
                if len(self._asked) >= self.remembered:
                    self.full = True
                    continue
                backoff = Backoff(initial=after, maximum=after * 4**self.attempts, factor=4.0)
                asked = self._asked[image] = _Asked(backoff, now)
            if asked.backoff.attempts >= self.attempts or now < asked.due:
                continue
            asked.due = now + asked.backoff.next_delay()
            chosen.append(image)
            if asked.backoff.attempts >= self.attempts:  # its last time: room for others
                del self._asked[image]
                self._gave_up[image] = None
                while len(self._gave_up) > self.remembered:
                    self._gave_up.popitem(last=False)
        return chosen
