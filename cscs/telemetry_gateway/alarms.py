"""Alarms as the observatory's Watcher has them (ICD 1.1 "TelemetryGateway"): pure state,
no I/O, no clock of its own (every change is told the time), so each transition is
tested on its own and the CSC only publishes what changed.

An alarm's life:

* **nominal**: severity and ``maxSeverity`` both NONE; not shown.
* **active**: a rule set a severity above NONE. ``maxSeverity`` latches the highest
  severity since the alarm was last nominal; a severity above an acknowledged
  ``maxSeverity`` makes the alarm unacknowledged again.
* **acknowledged**: an operator acknowledged it at a severity at or above
  ``maxSeverity`` (below is refused: they may not have seen the worst of it), which
  becomes the new ``maxSeverity``.
* **stale**: the condition cleared (severity NONE) but nobody acknowledged it; it stays
  visible until acknowledged, which makes it nominal. An acknowledged alarm whose
  condition clears is nominal at once.
* **muted**, independently: hidden from displays until a time, up to a severity (a
  severity above it shows again); ``unmute`` or the time ends it.
"""

from __future__ import annotations

import enum
import fnmatch
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Alarm", "AlarmError", "Alarms", "Severity"]

MAX_REASON = 256  # characters of a reason or a user's name that are kept


class Severity(enum.IntEnum):
    """The Watcher's severities, with its numbers (ICD 1.1)."""

    NONE = 1
    WARNING = 2
    SERIOUS = 3
    CRITICAL = 4


class AlarmError(ValueError):
    """A command on alarms that cannot be done; the message says why."""


@dataclass
class Alarm:
    """One alarm's state, with the ICD's field names."""

    name: str
    severity: Severity = Severity.NONE
    reason: str = ""
    maxSeverity: Severity = Severity.NONE
    acknowledged: bool = False
    acknowledgedBy: str = ""
    mutedSeverity: Severity = Severity.NONE
    mutedBy: str = ""
    timestampSeverityNewest: float = 0.0
    timestampMaxSeverity: float = 0.0
    timestampAcknowledged: float = 0.0
    timestampUnmute: float = 0.0

    @property
    def nominal(self) -> bool:
        return self.severity is Severity.NONE and self.maxSeverity is Severity.NONE

    @property
    def stale(self) -> bool:
        """Cleared but never acknowledged: still shown."""
        return self.severity is Severity.NONE and self.maxSeverity > Severity.NONE

    @property
    def muted(self) -> bool:
        return self.mutedSeverity > Severity.NONE

    def as_event(self) -> dict[str, Any]:
        """The ``alarm`` event's fields (severities as their numbers)."""
        values = asdict(self)
        for name in ("severity", "maxSeverity", "mutedSeverity"):
            values[name] = int(values[name])
        return values

    def set_severity(self, severity: Severity, reason: str, now: float) -> bool:
        """A rule's verdict; whether anything an operator sees changed."""
        if severity is Severity.NONE:
            if self.severity is Severity.NONE:
                return False  # nominal, or stale already
            self.severity, self.timestampSeverityNewest = severity, now
            if self.acknowledged:
                self._reset(now)
            # else stale: the last condition's reason stays shown, as the Watcher does
            return True
        reason = _bounded(reason)
        if severity is self.severity and reason == self.reason:
            return False
        self.severity, self.reason = severity, reason
        self.timestampSeverityNewest = now
        if severity > self.maxSeverity:
            self.maxSeverity, self.timestampMaxSeverity = severity, now
            if self.acknowledged:  # worse than what was acknowledged: look again
                self.acknowledged, self.acknowledgedBy = False, ""
                self.timestampAcknowledged = now
        return True

    def acknowledge(self, severity: Severity, by: str, now: float) -> bool:
        """AlarmError if ``severity`` is below ``maxSeverity``; whether it changed."""
        if severity < self.maxSeverity:
            raise AlarmError(
                f"{self.name}: cannot acknowledge at {severity.name}: it has been "
                f"{self.maxSeverity.name} (acknowledge at that severity or above)"
            )
        if self.nominal or self.acknowledged:
            return False
        if self.severity is Severity.NONE:  # stale: seen, so gone
            self._reset(now)
        else:
            self.maxSeverity = severity
            self.acknowledged, self.acknowledgedBy = True, _bounded(by)
            self.timestampAcknowledged = self.timestampMaxSeverity = now
        return True

    def mute(self, duration: float, severity: Severity, by: str, now: float) -> None:
        """Hide the alarm for ``duration`` s up to ``severity``; AlarmError if either
        makes no sense. A second mute replaces the first."""
        if not (math.isfinite(duration) and 0 < duration <= 7 * 86400):
            raise AlarmError(f"a mute lasts more than 0 s and at most a week, not {duration}")
        if severity is Severity.NONE:
            raise AlarmError("a mute hides a severity above NONE")
        self.mutedSeverity, self.mutedBy = severity, _bounded(by)
        self.timestampUnmute = now + duration

    def unmute(self) -> bool:
        if not self.muted:
            return False
        self.mutedSeverity, self.mutedBy, self.timestampUnmute = Severity.NONE, "", 0.0
        return True

    def _reset(self, now: float) -> None:
        self.severity = self.maxSeverity = Severity.NONE
        self.reason = ""
        self.acknowledged, self.acknowledgedBy = False, ""
        self.timestampAcknowledged = self.timestampMaxSeverity = now


class Alarms:
    """Every alarm by name; commands take a glob (``fnmatch``) of names, as the
    Watcher's do, so related alarms (``qc.*``) are acknowledged together."""

    def __init__(self) -> None:
        self._alarms: dict[str, Alarm] = {}

    def __iter__(self) -> Iterator[Alarm]:
        return iter(self._alarms.values())

    def __len__(self) -> int:
        return len(self._alarms)

    def get(self, name: str) -> Alarm:
        """The alarm of that name, made nominal the first time it is asked for."""
        alarm = self._alarms.get(name)
        if alarm is None:
            alarm = self._alarms[name] = Alarm(name)
        return alarm

    def not_nominal(self) -> list[Alarm]:
        """What the retained ``alarms`` event lists: every alarm that is not nominal,
        muted ones included (displays hide them, and count them)."""
        return sorted((a for a in self if not a.nominal), key=lambda a: a.name)

    def matching(self, pattern: str, exact: bool = False) -> list[Alarm]:
        """The alarms whose name matches the glob ``pattern`` or, ``exact``, is it
        (a display's row acts on its own alarm, whatever characters its name holds).
        AlarmError if none."""
        if exact:
            found = [self._alarms[pattern]] if pattern in self._alarms else []
            if not found:
                raise AlarmError(f"no alarm named {pattern!r}")
        else:
            found = [a for a in self if fnmatch.fnmatchcase(a.name, pattern)]
            if not found:
                raise AlarmError(f"no alarm matches {pattern!r}")
        return sorted(found, key=lambda a: a.name)

    def acknowledge(
        self, pattern: str, severity: Severity, by: str, now: float, exact: bool = False
    ) -> list[Alarm]:
        """Acknowledge every matching alarm that can be; the changed ones. If any is
        refused, nothing changes and AlarmError says which and why."""
        found = self.matching(pattern, exact)
        refused = [a for a in found if severity < a.maxSeverity]
        if refused:
            names = ", ".join(f"{a.name} ({a.maxSeverity.name})" for a in refused[:10])
            raise AlarmError(
                f"cannot acknowledge at {severity.name}: {len(refused)} alarm(s) have been "
                f"worse: {names}"
            )
        return [a for a in found if a.acknowledge(severity, by, now)]

    def mute(
        self,
        pattern: str,
        duration: float,
        severity: Severity,
        by: str,
        now: float,
        exact: bool = False,
    ) -> list[Alarm]:
        found = self.matching(pattern, exact)
        Alarm("check").mute(duration, severity, by, now)  # refuse before changing any
        for alarm in found:
            alarm.mute(duration, severity, by, now)
        return found

    def unmute(self, pattern: str, exact: bool = False) -> list[Alarm]:
        return [a for a in self.matching(pattern, exact) if a.unmute()]

    def expire_mutes(self, now: float) -> list[Alarm]:
        """Unmute the alarms whose mute has ended; the changed ones."""
        return [a for a in self if a.muted and now >= a.timestampUnmute and a.unmute()]

    def next_unmute(self) -> float | None:
        """When the next mute ends (for the CSC's timer), or None."""
        ends = [a.timestampUnmute for a in self if a.muted]
        return min(ends) if ends else None


def _bounded(text: str) -> str:
    """Printable, and not longer than anyone reads."""
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_REASON])
