"""What the MQTT bus does with each message the broker sends it: drop the extra copies
of overlapping filters, hand the rest to the local readers, and, for a ``manual_ack``
bus, acknowledge each to the broker only once every reader that took it has made it
safe (and never if one that wanted it had no room, so that the broker sends it again).

Pure: no MQTT library. The bus says which filters it has at the broker and hands in
each message with a function that acknowledges it on the connection it came on.
"""

from __future__ import annotations

from collections.abc import Callable

from cscs.core.copies import OverlapCopies
from cscs.core.topics import topic_matches
from cscs.core.transport import Message

__all__ = ["Inbox", "PendingAck"]

Deliver = Callable[[Message], tuple[int, int]]
"""Hand a message to the local readers: how many it matched, how many took it."""


class PendingAck:
    """One received QoS 1/2 message of a ``manual_ack`` bus: acknowledged to the broker
    once every subscription that took it has called it (at once if none wanted it), and
    never if one that wanted it had no room. ``send`` does nothing for a connection
    that has since been replaced: the broker sends the message again on the new one."""

    def __init__(self, send: Callable[[], None]) -> None:
        self._send_to_broker = send
        self._owed = 0
        self._sent = False

    def withhold(self) -> None:
        """A reader that should have had it did not: it must come again."""
        self._sent = True

    def taken_by(self, readers: int) -> None:
        self._owed += readers
        if self._owed <= 0:
            self._send()

    def __call__(self) -> None:
        self._owed -= 1
        if self._owed <= 0:
            self._send()

    def _send(self) -> None:
        if not self._sent:
            self._sent = True
            self._send_to_broker()


class Inbox:
    """The receiving side of one bus, across its connections."""

    def __init__(self, deliver: Deliver, *, manual_ack: bool) -> None:
        self._deliver = deliver
        self._manual_ack = manual_ack
        self._copies = OverlapCopies()
        self._at_broker: set[str] = set()  # filters subscribed on the current connection

    def connected(self) -> None:
        """A new connection: no filters at the broker yet, no copies due (a message sent
        again after a reconnect is a redelivery, for the readers to judge)."""
        self._at_broker = set()
        self._copies.clear()

    def subscribed(self, topic_filter: str) -> None:
        """The broker has ``topic_filter`` for the current connection."""
        self._at_broker.add(topic_filter)

    def receive(
        self,
        topic: str,
        payload: bytes,
        *,
        retained: bool,
        qos: int,
        ack: Callable[[], None],
        now: float,
    ) -> bool:
        """One message from the broker; ``ack`` acknowledges it (used only by a
        ``manual_ack`` bus; the library has done it otherwise), ``now`` is a monotonic
        clock in seconds. True when it was left with the broker because a reader's queue
        was full (it comes again on the next connection)."""
        if self._is_copy(topic, payload, retained, now):
            if self._manual_ack and qos > 0:  # acknowledged, never delivered
                ack()
            return False
        if not self._manual_ack or qos == 0:
            self._deliver(Message(topic, payload, retained))
            return False
        pending = PendingAck(ack)
        matched, taken = self._deliver(Message(topic, payload, retained, ack=pending))
        withheld = taken < matched
        if withheld:  # never acknowledged: the broker sends it again
            pending.withhold()
        pending.taken_by(taken)
        return withheld

    def _is_copy(self, topic: str, payload: bytes, retained: bool, now: float) -> bool:
        """An extra copy the broker sent for overlapping filters (cscs.core.copies):
        counted against the filters at the broker, which outlive a reader's unsubscribe."""
        filters = sum(topic_matches(f, topic) for f in self._at_broker) if not retained else 0
        return self._copies.is_copy(
            topic, payload, retained=retained, matching_filters=filters, now=now
        )
