"""A topic's ``seq`` (ICD §1: every payload carries a per-topic counter from 1, "so a
gap shows a loss") for publishers whose topics are not declared in advance (one per
image, as the DM-internal QC topics), and the gaps in it, seen from the reading side.
Pure: :class:`SequenceNumbers` gives each message its number, :class:`SequenceGaps` is
told each ``seq`` heard and answers how many messages of that topic went missing just
before it.

A count that goes back (the publisher restarted, and counts from 1 again) starts the
topic afresh: nothing can be said of what it lost while it was away. The topics
remembered are bounded (the least recently heard forgotten first), so a publisher of
one topic per image, or a forger of topics, costs a bounded amount of memory.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["SequenceGaps", "SequenceNumbers"]


class _Remembered:
    """The last ``seq`` of at most ``topics`` topics, the least recently used forgotten."""

    def __init__(self, topics: int = 1000) -> None:
        if topics < 1:
            raise ValueError(f"at least one topic must be remembered, not {topics}")
        self._limit = topics
        self._last: OrderedDict[str, int] = OrderedDict()

    def _swap(self, topic: str, seq: int) -> int | None:
        """Remember ``seq`` as ``topic``'s last; the one it replaces (None: none)."""
        last = self._last.pop(topic, None)
        self._last[topic] = seq
        if len(self._last) > self._limit:
            self._last.popitem(last=False)
        return last


class SequenceNumbers(_Remembered):
    def next(self, topic: str) -> int:
        """The ``seq`` of ``topic``'s next message: 1 for its first (or for one forgotten,
        which a reader takes for a restart, not a loss)."""
        seq = (self._last.get(topic) or 0) + 1
        self._swap(topic, seq)
        return seq


class SequenceGaps(_Remembered):
    def heard(self, topic: str, seq: int) -> int:
        """How many messages of ``topic`` were missed before this one, numbered ``seq``
        (0 for none; and for ``seq`` 0, a publisher that does not number its messages).
        Call it once per message: a redelivery must be recognised before."""
        if seq <= 0:
            return 0
        last = self._swap(topic, seq)
        if last is None or seq <= last:  # the first heard, or the publisher restarted
            return 0
        return seq - last - 1
