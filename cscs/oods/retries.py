"""Work to try again later, pure and bounded: each entry with its own back-off
(:class:`~cscs.core.backoff.Backoff`), the oldest dropped (and returned, for the caller
to say so) when full. What the OODS retries this way are ConsDB rows (an image's
header rows, its quick-look); the repository's refusals are the ledger's."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from cscs.core.backoff import Backoff

__all__ = ["RetrySet"]

K = TypeVar("K", bound=Hashable)


@dataclass
class _Entry:
    backoff: Backoff
    due: float
    items: set[str] = field(default_factory=set)


class RetrySet(Generic[K]):
    def __init__(self, backoff: Callable[[], Backoff], capacity: int) -> None:
        self._backoff = backoff
        self.capacity = capacity
        self._entries: OrderedDict[K, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def failed(self, key: K, items: Iterable[str], now: float) -> list[K]:
        """``key`` failed (with these items, merged with what it held): due again after
        its next back-off delay. Returns the keys dropped for room."""
        entry = self._entries.get(key)
        dropped: list[K] = []
        if entry is None:
            while len(self._entries) >= self.capacity:
                dropped.append(self._entries.popitem(last=False)[0])
            entry = self._entries[key] = _Entry(self._backoff(), now)
        entry.items.update(items)
        entry.due = now + entry.backoff.next_delay()
        return dropped

    def due(self, now: float) -> list[tuple[K, set[str]]]:
        """The entries due at ``now``, left in: :meth:`succeeded` removes one,
        :meth:`failed` puts it off again (its back-off kept)."""
        ready = [key for key, entry in self._entries.items() if entry.due <= now]
        return [(key, self._entries[key].items) for key in ready]

    def succeeded(self, key: K) -> None:
        self._entries.pop(key, None)

    def next_due(self) -> float | None:
        return min((e.due for e in self._entries.values()), default=None)
