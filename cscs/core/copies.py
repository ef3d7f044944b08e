"""Copies of one message that a broker sends for overlapping subscriptions.

MQTT 3.1.1 lets a broker send a client one copy of a message for each of the client's
subscriptions that its topic matches (§3.3.5); amqtt does, Mosquitto sends one. The bus
hands every message it receives to every local reader whose filter matches, so a
reader of ``…/event/alarm`` on a bus that also reads ``…/event/+`` would see each alarm
twice on amqtt: the demo's night staff did. :class:`OverlapCopies` recognises the extra
copies so that the bus can drop them (acknowledging them to the broker all the same).

What counts as a copy: a message that is not retained (a retained one is what a new
subscription is sent, and must reach it), whose topic matches more than one of the
filters the bus has at the broker, with the same bytes as one received on the same
topic less than :data:`WINDOW` seconds before, and no more copies of it than its
matching filters could explain. Copies come back to back; the window bounds what a
broker that sends one copy (Mosquitto) leaves remembered. Two genuine messages of this
project never have the same bytes (each is stamped with its ``seq`` and send time); a
replay of identical bytes by someone else within the window is worth nothing to a
reader.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

__all__ = ["WINDOW", "OverlapCopies"]

_REMEMBERED = 256  # messages: the copies of one come back to back, or nearly
WINDOW = 1.0  # s a message's copies are waited for


class OverlapCopies:
    """Remembers recent messages with overlapping filters and the copies still due."""

    def __init__(self, remembered: int = _REMEMBERED, window: float = WINDOW) -> None:
        self._remembered = remembered
        self._window = window
        # (topic, digest) -> (copies still due, when the first came), oldest first
        self._due: OrderedDict[tuple[str, bytes], tuple[int, float]] = OrderedDict()

    def is_copy(
        self, topic: str, payload: bytes, *, retained: bool, matching_filters: int, now: float
    ) -> bool:
        """True for an extra copy of a message just received (drop it); False for a
        message to deliver. ``now``: a monotonic clock, in seconds."""
        while self._due and next(iter(self._due.values()))[1] < now - self._window:
            self._due.popitem(last=False)
        if retained or matching_filters < 2:
            return False
        key = (topic, hashlib.blake2b(payload, digest_size=16).digest())
        due, first = self._due.get(key, (0, now))
        if due > 0:
            if due == 1:
                del self._due[key]
            else:
                self._due[key] = (due - 1, first)
            return True
        self._due[key] = (matching_filters - 1, now)
        if len(self._due) > self._remembered:
            self._due.popitem(last=False)
        return False

    def __len__(self) -> int:
        """Messages remembered (at most the number given)."""
        return len(self._due)

    def clear(self) -> None:
        """A new connection: copies are of messages of this connection only (a message
        sent again after a reconnect is a redelivery, for the readers to judge)."""
        self._due.clear()
