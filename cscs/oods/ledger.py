"""The OODS's bookkeeping of images, pure: what to register next, when, and when an
image is announced (``imageInOODS``). No I/O and no clock of its own: every call says
what time it is (monotonic seconds), so the rules are tested by stepping time.

An image is **complete** when every sensor the camera read out (its ``endReadout``),
except those the Archiver said it could not archive (``imageRetrievalFailed``), is in
the repository or refused by it. It is announced then, at once. When that cannot be
known (its ``endReadout`` was not heard: the OODS started later, or it was archived by
catch-up; or a sensor is neither archived nor said failed), it is announced with what
is registered once nothing has been heard of it for ``settle_delay``. Either way it is
announced again whenever something changes afterwards: a refused file registered at
last, a file registered again (its header completed), a sensor archived late.

Each image's files are registered together, in one round as soon as all of them are
heard of, so that the OODS does not take the archiver's
CPU and disk while it still writes the image; an image whose sensors are not known
(no ``endReadout`` heard) is due ``batch_delay`` after its first prompt. Either way a
round is due ``settle_delay`` after the first prompt at the latest (a file whose
``imageArchived`` was lost does not hold its siblings back longer), and a later prompt
never postpones a round already due. Refused
files are tried again with back-off (the image's own, reset once nothing of it is
refused); a repository that is down delays the whole image (the caller's back-off).

Memory is bounded: at most ``max_images`` images are held; beyond, an image with
nothing left to do goes first, else the oldest — returned, so that the caller says it
is left to the next reconciliation (the catalog still has it: nothing is lost).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from cscs.core.backoff import Backoff

__all__ = ["Announcement", "ImageLedger"]


@dataclass(frozen=True)
class Announcement:
    """What ``imageInOODS`` says of an image now."""

    image: str
    sensors: tuple[str, ...]
    """in the repository"""
    refused: tuple[tuple[str, str], ...]
    """(sensor, reason), each retried"""


@dataclass
class _Image:
    heard: float  # the last news of it (a prompt, a round's outcome)
    expected: frozenset[str] | None = None  # read out (endReadout)
    failed: set[str] = field(default_factory=set)  # the archiver could not archive (yet)
    wanted: set[str] = field(default_factory=set)  # to register in the next round
    registered: set[str] = field(default_factory=set)  # in the repository
    refused: dict[str, str] = field(default_factory=dict)  # sensor -> reason
    due: float | None = None  # the next round
    retries: Backoff | None = None  # of its refused files
    news: bool = False  # changed since it was last announced
    in_round: bool = False  # taken, its outcome not yet known

    @property
    def complete(self) -> bool:
        if self.expected is None:
            return False
        return self.expected - self.failed <= self.registered | self.refused.keys()

    @property
    def idle(self) -> bool:
        return not (self.due is not None or self.wanted or self.refused or self.news
                    or self.in_round)  # fmt: skip


class ImageLedger:
    def __init__(
        self,
        *,
        batch_delay: float,
        settle_delay: float,
        backoff: Callable[[], Backoff],
        max_images: int,
    ) -> None:
        self.batch_delay = batch_delay
        self.settle_delay = settle_delay
        self._backoff = backoff
        self.max_images = max_images
        self._images: OrderedDict[str, _Image] = OrderedDict()  # oldest news first

    def __contains__(self, image: str) -> bool:
        return image in self._images

    # ---- what is heard -----------------------------------------------------------------

    def read_out(self, image: str, sensors: Collection[str], now: float) -> list[str]:
        """The camera read these sensors out (``endReadout``): what completes the image.
        Returns the images dropped for room (left to reconciliation)."""
        entry, dropped = self._entry(image, now)
        entry.expected = frozenset(sensors)
        return dropped

    def archived(self, image: str, sensors: Iterable[str], now: float) -> list[str]:
        """These files of the image are archived (a prompt: the catalog says which
        really are). The round is due as soon as every file the image is known to have
        is heard of, or ``batch_delay`` after the first prompt
        when the image's sensors are not known, and ``settle_delay`` after the first
        at the latest."""
        entry, dropped = self._entry(image, now)
        entry.wanted.update(sensors)
        self._schedule(entry, now)
        return dropped

    def found(self, image: str, sensors: Collection[str], now: float) -> list[str]:
        """Reconciliation found these catalog files of the image missing from the
        repository: they are what the image is, unless the camera said more."""
        entry, dropped = self._entry(image, now)
        if entry.expected is None:
            entry.expected = frozenset(sensors)
        entry.wanted.update(sensors)
        self._due(entry, now)
        return dropped

    def retrieval_failed(self, image: str, sensors: Iterable[str], now: float) -> None:
        """The archiver could not archive these (yet): not waited for. One archived
        later (catch-up) is registered then, and the image announced again."""
        entry = self._images.get(image)
        if entry is not None:
            entry.failed.update(s for s in sensors if s not in entry.registered)
            entry.heard = now
            if entry.wanted:
                self._schedule(entry, now)

    def _schedule(self, entry: _Image, now: float) -> None:
        """One round for all of an image's files, as soon as they are all heard of: a
        round while the archiver still writes the image's other files would take its
        CPU and disk, and cost a transaction more."""
        if entry.expected is None:
            self._due(entry, now + self.batch_delay)
            return
        heard = entry.wanted | entry.registered | entry.refused.keys() | entry.failed
        if entry.expected <= heard:
            self._due(entry, now)  # nothing more to wait for
        else:
            self._due(entry, now + self.settle_delay)

    # ---- rounds ------------------------------------------------------------------------

    def next_due(self, now: float) -> str | None:
        """The image whose round is due first, if one is due at ``now``."""
        due = [(e.due, name) for name, e in self._images.items() if e.due is not None]
        if not due:
            return None
        when, name = min(due)
        return name if when <= now else None

    def next_event(self) -> float | None:
        """When something is next due: a round, or an announcement after the settle delay."""
        times = [e.due for e in self._images.values() if e.due is not None]
        times += [e.heard + self.settle_delay for e in self._images.values()
                  if e.news and not e.wanted]  # fmt: skip
        return min(times, default=None)

    def take(self, image: str) -> set[str]:
        """Start the image's round: the sensors to register (those prompted and those
        refused before; the caller adds the catalog's files the repository lacks)."""
        entry = self._images[image]
        sensors = entry.wanted | entry.refused.keys()
        entry.wanted = set()
        entry.due = None
        entry.in_round = True
        return sensors

    def settled(
        self,
        image: str,
        *,
        in_repository: Iterable[str],
        changed: Iterable[str],
        refused: Mapping[str, str],
        now: float,
    ) -> None:
        """A round's outcome: the image's files now in the repository, those of them
        registered anew or with other values (``changed``), those refused (reason)."""
        entry = self._images.get(image)
        if entry is None:  # dropped for room while its round ran
            return
        entry.heard, entry.in_round = now, False
        in_repo = set(in_repository)
        new = in_repo - entry.registered
        entry.news |= bool(new) or bool(set(changed))
        entry.registered |= in_repo
        entry.failed -= in_repo
        for sensor in in_repo:
            entry.refused.pop(sensor, None)
        for sensor, reason in refused.items():
            if entry.refused.get(sensor) != reason:
                entry.news = True
            entry.refused[sensor] = reason
        if entry.refused:
            entry.retries = entry.retries or self._backoff()
            self._due(entry, now + entry.retries.next_delay())
        else:
            entry.retries = None
        if entry.wanted:  # heard of while the round ran: due as if heard now
            self._schedule(entry, now)
        self._images.move_to_end(image)

    def unavailable(self, image: str, sensors: Iterable[str], retry_at: float) -> None:
        """The round could not reach the repository (or the catalog): its sensors wait
        for ``retry_at``."""
        entry = self._images.get(image)
        if entry is not None:
            entry.in_round = False
            entry.wanted.update(sensors)
            self._due(entry, retry_at)

    # ---- announcements -----------------------------------------------------------------

    def announcements(self, now: float) -> list[Announcement]:
        """Images to announce now: changed since last said, no round waiting for what
        was just heard, and complete or settled. Each is announced once per change."""
        ready: list[Announcement] = []
        for name, entry in self._images.items():
            if not entry.news or entry.wanted:
                continue
            if entry.complete or now - entry.heard >= self.settle_delay:
                entry.news = False
                ready.append(Announcement(name, tuple(sorted(entry.registered)),
                                          tuple(sorted(entry.refused.items()))))  # fmt: skip
        return ready

    # ---- state ---------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Images waiting for a round, or in one."""
        return sum(1 for e in self._images.values()
                   if e.wanted or e.due is not None or e.in_round)  # fmt: skip

    @property
    def refused_pending(self) -> int:
        return sum(len(e.refused) for e in self._images.values())

    def _due(self, entry: _Image, when: float) -> None:
        entry.due = when if entry.due is None else min(entry.due, when)

    def _entry(self, image: str, now: float) -> tuple[_Image, list[str]]:
        entry = self._images.get(image)
        if entry is not None:
            entry.heard = now
            return entry, []
        dropped = self._make_room()
        entry = self._images[image] = _Image(heard=now)
        return entry, dropped

    def _make_room(self) -> list[str]:
        dropped: list[str] = []
        while len(self._images) >= self.max_images:
            idle = next((name for name, e in self._images.items() if e.idle), None)
            if idle is not None:
                del self._images[idle]  # done with: forgetting it loses nothing
                continue
            name, _ = self._images.popitem(last=False)
            dropped.append(name)
        return dropped
