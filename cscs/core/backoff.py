"""Jittered exponential back-off, shared by every retry loop (broker, DAQ, …)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays of ``initial · factor^n`` capped at ``maximum``, with "equal jitter".

    Equal jitter (a uniform draw between half the delay and the delay) spreads the
    reconnects of many CSCs after a broker restart so they do not arrive as one wave,
    while keeping at least half the back-off, so a broker that is down is not hammered
    ("full jitter", a draw between 0 and the delay, can retry at once).
    """

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0
