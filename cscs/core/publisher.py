"""What a CSC publishes, checked and stamped: no I/O.

Only declared topics may be published (a typo is an error, not a new topic); every
payload gets its per-topic ``seq`` (from 1, so a gap shows a loss) and ``sent_tai``
(ICD §1); the latest retained event of each topic is kept, so that it can be
published again after the broker comes back.
"""

from __future__ import annotations

from collections import deque

from cscs.core.protocol import encode
from cscs.core.schema import EventSpec, Interface, Payload, TelemetrySpec
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress

__all__ = ["Publisher", "stamp"]

_RECENT = 16


class Publisher:
    def __init__(self, interface: Interface, address: CscAddress) -> None:
        self._address = address
        self._events = {e.name for e in interface.events}
        self._telemetry = {t.name for t in interface.telemetry}
        self._seq: dict[str, int] = {}
        self._retained: dict[str, bytes] = {}
        # The last few retained payloads of each topic: echoes of these are our own.
        self._recent: dict[str, deque[bytes]] = {}

    def event(self, spec: EventSpec[Payload], payload: Payload) -> tuple[str, bytes]:
        """The topic and wire bytes of an event; remembered if it is retained."""
        if spec.name not in self._events:
            raise ValueError(f"{self._address.name} does not declare event {spec.name}")
        topic = self._address.event(spec.name)
        data = self._stamp(topic, payload)
        if spec.retained:
            self._retained[topic] = data
            self._recent.setdefault(topic, deque(maxlen=_RECENT)).append(data)
        return topic, data

    def telemetry(self, spec: TelemetrySpec[Payload], payload: Payload) -> tuple[str, bytes]:
        if spec.name not in self._telemetry:
            raise ValueError(f"{self._address.name} does not declare telemetry {spec.name}")
        topic = self._address.telemetry(spec.name)
        return topic, self._stamp(topic, payload)

    def retained(self) -> list[tuple[str, bytes]]:
        """The latest retained event of each topic, as first published (same ``seq``)."""
        return list(self._retained.items())

    def latest(self, topic: str) -> bytes | None:
        """The latest retained event published on ``topic``, if any."""
        return self._retained.get(topic)

    def published_recently(self, topic: str, data: bytes) -> bool:
        """Whether ``data`` is one of the last retained events published on ``topic``
        (an echo of our own, perhaps arriving after a newer one went out)."""
        return data in self._recent.get(topic, ())

    def _stamp(self, topic: str, payload: Payload) -> bytes:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        return stamp(payload, seq, current_tai())


def stamp(payload: Payload, seq: int, sent_tai: float) -> bytes:
    """The wire bytes of ``payload`` as the ``seq``-th message of its topic (ICD §1):
    for a publisher that keeps its own sequence (a durable queue's), the same envelope."""
    return encode(payload.model_dump() | {"seq": seq, "sent_tai": sent_tai})
