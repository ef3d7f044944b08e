"""Faults on demand, per image and sensor: what the archiver must survive.

A rule names a kind of fault, which images and sensors it hits (shell patterns), and
how many times it fires. Rules come from the camera's configuration (``faults:``) or its
``injectFault`` command. Matching is pure logic; the camera and the DAQ server act on
what it returns.
"""

from __future__ import annotations

import fnmatch
import threading
from enum import StrEnum

from pydantic import Field

from cscs.core.schema import Payload

__all__ = ["FaultKind", "FaultPlan", "FaultRule"]


class FaultKind(StrEnum):
    DROP = "drop"  # the pixels never follow the header, as if the link died
    CORRUPT = "corrupt"  # segment `segment` arrives with flipped bits
    SLOW = "slow"  # every segment is delayed by `delay` seconds
    MISSING = "missing"  # the sensor is not read out: no data in the DAQ
    EVICT = "evict"  # the image is evicted from the buffer before it is read


READ_FAULTS = frozenset({FaultKind.DROP, FaultKind.CORRUPT, FaultKind.SLOW, FaultKind.EVICT})
READOUT_FAULTS = frozenset({FaultKind.MISSING})


class FaultRule(Payload):
    """One fault to inject (also the parameters of ``Camera``'s ``injectFault``)."""

    kind: FaultKind = Field(strict=False)  # from its JSON string
    image: str = "*"
    """Image names it applies to (shell pattern, e.g. `*_000003`)."""
    sensor: str = "*"
    """Sensors it applies to (shell pattern, e.g. `R22_S1*`)."""
    count: int = Field(default=1, ge=0)
    """How many times it fires; 0 for every time."""
    segment: int = Field(default=8, ge=0, le=15)
    """For corrupt: the segment (0-15, file order) that arrives damaged."""
    delay: float = Field(default=0.5, ge=0.0, le=60.0)
    """For slow: seconds of delay per segment (16 per sensor)."""

    def matches(self, image: str, sensor: str) -> bool:
        return fnmatch.fnmatchcase(image, self.image) and fnmatch.fnmatchcase(sensor, self.sensor)


class FaultPlan:
    """The rules in force; :meth:`take` fires the first that matches."""

    def __init__(self, rules: list[FaultRule] | None = None) -> None:
        self._rules: list[tuple[FaultRule, int]] = []
        self._lock = threading.Lock()  # readout runs in worker threads
        for rule in rules or []:
            self.add(rule)

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append((rule, rule.count))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [rule for rule, _ in self._rules]

    def take(self, image: str, sensor: str, kinds: frozenset[FaultKind]) -> FaultRule | None:
        with self._lock:
            for position, (rule, left) in enumerate(self._rules):
                if rule.kind in kinds and rule.matches(image, sensor):
                    if left == 1:
                        del self._rules[position]
                    elif left > 1:
                        self._rules[position] = (rule, left - 1)
                    return rule
        return None
