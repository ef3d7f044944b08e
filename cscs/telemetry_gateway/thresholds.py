"""Threshold rules on QC metrics: a value's severity from warning / serious / critical
levels, with hysteresis on the way back, optionally on the median of the last N
images. Pure: a rule is told each value and answers with a severity and a reason.

Hysteresis: a severity is reached when the value crosses its level, and kept until the
value is back beyond the level by more than ``hysteresis`` (for a "high is bad" rule:
below ``level - hysteresis``). A value that wanders about one level does not make an
alarm flap, which would train the night staff to ignore it.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cscs.telemetry_gateway.alarms import Severity

__all__ = ["ThresholdRule", "ThresholdState"]

_LEVELS = (Severity.WARNING, Severity.SERIOUS, Severity.CRITICAL)


class ThresholdRule(BaseModel):
    """One rule, as configured: e.g. ``{name: qc.seeing, metric: psfFwhm, warning: 1.2,
    serious: 1.5, critical: 2.0, hysteresis: 0.05, window: 3}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    """the alarm's name"""
    metric: str = Field(pattern=r"^[A-Za-z0-9_]{1,32}$")
    """an imageQuality field: psfFwhm, zeroPoint, skyMean, nSources, …"""
    direction: Literal["above", "below"] = "above"
    """`above`: high values are bad (seeing); `below`: low ones are (zero point)"""
    warning: float | None = None
    serious: float | None = None
    critical: float | None = None
    hysteresis: float = Field(default=0.0, ge=0.0)
    window: int = Field(default=1, ge=1, le=100)
    """the median of the last `window` images is what is judged (of an even number,
    the better middle one)"""
    instrument: str = ""
    """only this instrument's images (empty: every instrument's)"""

    @model_validator(mode="after")
    def _levels_in_order(self) -> ThresholdRule:
        levels = [v for v in (self.warning, self.serious, self.critical) if v is not None]
        if not levels:
            raise ValueError(f"{self.name}: a rule needs at least one level")
        if not all(math.isfinite(v) for v in levels):
            raise ValueError(f"{self.name}: levels must be finite")
        ordered = sorted(levels) if self.direction == "above" else sorted(levels, reverse=True)
        if levels != ordered or len(set(levels)) != len(levels):
            worse = "higher" if self.direction == "above" else "lower"
            raise ValueError(f"{self.name}: each level must be {worse} than the one before")
        return self

    def level(self, severity: Severity) -> float | None:
        return {Severity.WARNING: self.warning, Severity.SERIOUS: self.serious,
                Severity.CRITICAL: self.critical}.get(severity)  # fmt: skip


class ThresholdState:
    """A rule with what it has seen: the last ``window`` values and the severity."""

    def __init__(self, rule: ThresholdRule) -> None:
        self.rule = rule
        self.values: deque[float] = deque(maxlen=rule.window)
        self.severity = Severity.NONE

    def judge(self, value: float, image: str) -> tuple[Severity, str]:
        """The severity after ``value`` (of ``image``), and the reason to show."""
        if not math.isfinite(value):
            raise ValueError(f"{self.rule.metric} of {image} is not a number: {value}")
        self.values.append(value)
        # Of an even number of images, the better middle one: an alarm needs at least
        # half of the images to be as bad.
        better = statistics.median_low if self.rule.direction == "above" else statistics.median_high
        judged = better(self.values)
        self.severity = self._severity(judged)
        rule = self.rule
        what = (
            f"{rule.metric} {judged:.4g}"
            if rule.window == 1
            else f"median {rule.metric} of the last {len(self.values)} images {judged:.4g}"
        )
        if self.severity is Severity.NONE:
            return self.severity, ""
        level = rule.level(self.severity)
        side = "above" if rule.direction == "above" else "below"
        return self.severity, f"{what} ({image}) {side} the {self.severity.name} level {level:g}"

    def _severity(self, value: float) -> Severity:
        reached = Severity.NONE
        held = Severity.NONE
        for severity in _LEVELS:
            level = self.rule.level(severity)
            if level is None:
                continue
            if self._beyond(value, level):
                reached = severity
            if severity <= self.severity and self._beyond(value, self._relaxed(level)):
                held = severity
        return max(reached, held)

    def _beyond(self, value: float, level: float) -> bool:
        return value >= level if self.rule.direction == "above" else value <= level

    def _relaxed(self, level: float) -> float:
        """Where a severity reached at ``level`` is let go: ``hysteresis`` back."""
        hysteresis = self.rule.hysteresis
        return level - hysteresis if self.rule.direction == "above" else level + hysteresis
