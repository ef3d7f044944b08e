"""What the header service collects, and the rules for collecting it: no I/O here.

The keyword map (configuration) says, for each keyword, which CSC topic and field it
comes from, at which moment of the exposure it is taken (``start`` of integration,
``end`` of the exposure, or a named camera event), whether it is the latest value or
the ``min``/``max``/``mean`` over the exposure, and how old a telemetry value may be.
A value that is absent or too old is *missing*, with the reason; it is never invented.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from cscs.camera.events import EndOfImageTelemetry, EndReadout, StartIntegration
from cscs.camera.headers.cards import PrintableName, PrintableText, check_header_keyword
from cscs.core.topics import CscAddress

__all__ = [
    "CameraMoment",
    "Exposure",
    "KeywordRule",
    "Missing",
    "SourceCache",
    "SourceKey",
    "Step",
    "Value",
    "number_of",
    "replay",
]

DEFAULT_TELEMETRY_MAX_AGE = 5.0  # s


class KeywordRule(BaseModel):
    """One keyword of the map (``keywords:`` in the header service's configuration)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keyword: Annotated[str, AfterValidator(check_header_keyword)]
    source: str
    """CSC as Name:index; `{camera}` stands for the header service's own index."""
    topic: str
    """`tel/<name>` or `evt/<name>`."""
    field: str
    moment: str = "start"
    """`start`, `end`, or a camera event name (e.g. `endReadout`)."""
    monitor: Literal["latest", "min", "max", "mean"] = "latest"
    """latest: the value at `moment`; others: over the exposure, start to end."""
    max_age: float | None = Field(default=None, gt=0)
    """Seconds a telemetry value stays valid (default 5); events do not age."""
    scale: float = 1.0
    offset: float = 0.0
    unit: PrintableName = ""
    comment: PrintableText = ""
    """Unit and comment go into the FITS header: printable ASCII, bounded."""
    cameras: list[Literal["LATISS", "LSSTComCam", "LSSTCam"]] = []
    """Only for these cameras (e.g. LATISS's grating); empty: for every camera."""

    def applies_to(self, instrument: str) -> bool:
        return not self.cameras or instrument in self.cameras

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        kind, _, name = value.partition("/")
        if kind not in ("tel", "evt") or not name or "/" in name:
            raise ValueError(f"topic {value!r} must be tel/<name> or evt/<name>")
        return value

    def key(self, camera_index: int) -> SourceKey:
        address = CscAddress.parse(self.source.replace("{camera}", str(camera_index)))
        kind, _, name = self.topic.partition("/")
        return SourceKey(address.name, address.index, kind, name)

    @property
    def age_limit(self) -> float:
        if self.max_age is not None:
            return self.max_age
        return DEFAULT_TELEMETRY_MAX_AGE if self.topic.startswith("tel/") else math.inf

    def convert(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value
        if self.scale == 1.0 and self.offset == 0.0:
            return value
        return value * self.scale + self.offset


@dataclass(frozen=True)
class SourceKey:
    name: str
    index: int
    kind: str  # tel | evt
    topic: str

    def __str__(self) -> str:
        return f"{self.name}:{self.index} {self.kind}/{self.topic}"


@dataclass(frozen=True)
class Value:
    value: Any
    unit: str = ""
    comment: str = ""


@dataclass(frozen=True)
class Missing:
    reason: str


def number_of(entry: Value | Missing | None, keyword: str) -> float | str:
    """A collected keyword's value as a finite number, or the reason it is not one."""
    if entry is None:
        return f"{keyword} is not in the keyword map"
    if isinstance(entry, Missing):
        return f"{keyword}: {entry.reason}"
    value = entry.value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"{keyword} is not a number"
    return float(value)


@dataclass
class _Sample:
    data: dict[str, Any]
    received: float  # TAI


class SourceCache:
    """The latest message of every source topic, with when it arrived."""

    def __init__(self) -> None:
        self._latest: dict[SourceKey, _Sample] = {}

    def update(self, key: SourceKey, data: dict[str, Any], received: float) -> None:
        self._latest[key] = _Sample(data, received)

    def lookup(self, rule: KeywordRule, key: SourceKey, now: float) -> Value | Missing:
        sample = self._latest.get(key)
        if sample is None:
            return Missing(f"nothing received from {key}")
        age = now - sample.received
        if age > rule.age_limit:
            return Missing(f"{key} is stale: last value {age:.1f} s old (limit {rule.age_limit:g})")
        if rule.field not in sample.data:
            return Missing(f"{key} has no field {rule.field!r}")
        value = sample.data[rule.field]
        if value is not None and not isinstance(value, bool | int | float | str):
            return Missing(f"{key} field {rule.field!r} is a {type(value).__name__}, not a value")
        return Value(rule.convert(value), rule.unit, rule.comment)


@dataclass
class _Monitor:
    rule: KeywordRule
    values: list[float] = field(default_factory=list)

    def result(self) -> Value | Missing:
        if not self.values:
            return Missing(f"no value during the exposure for {self.rule.monitor}")
        values = self.values
        kind = self.rule.monitor
        result = (
            min(values)
            if kind == "min"
            else max(values)
            if kind == "max"
            else sum(values) / len(values)
        )
        return Value(self.rule.convert(result), self.rule.unit, self.rule.comment)


class Exposure:
    """One image's collection, from ``startIntegration`` until every moment has come."""

    def __init__(
        self, start: StartIntegration, rules: list[KeywordRule], camera_index: int
    ) -> None:
        self.image = start.imageName
        self.start = start
        self.end: EndOfImageTelemetry | None = None
        self.readout: EndReadout | None = None
        self.camera_index = camera_index
        self.values: dict[str, Value | Missing] = {}
        self._rules = rules
        # Parsed once here, not on every source message (mount telemetry is 10 Hz).
        self._keys = {r.keyword: r.key(camera_index) for r in rules}
        self._monitors = [_Monitor(r) for r in rules if r.monitor != "latest"]
        self._monitoring = False
        moments = {r.moment for r in rules if r.monitor == "latest"} | {"start", "end"}
        self.pending_moments: set[str] = moments

    @property
    def complete(self) -> bool:
        return not self.pending_moments

    def reach(self, moment: str, cache: SourceCache, now: float) -> None:
        """Take the values due at ``moment`` (``start``, ``end`` or an event name)."""
        if moment not in self.pending_moments:
            return
        self.pending_moments.discard(moment)
        for rule in self._rules:
            if rule.monitor == "latest" and rule.moment == moment:
                self.values[rule.keyword] = cache.lookup(rule, self._keys[rule.keyword], now)
        if moment == "start":
            self._monitoring = True
            for monitor in self._monitors:  # the value in force as the exposure starts
                first = cache.lookup(monitor.rule, self._keys[monitor.rule.keyword], now)
                if isinstance(first, Value) and isinstance(first.value, int | float):
                    monitor.values.append(float(first.value))
        elif moment == "end":
            self._monitoring = False
            for monitor in self._monitors:
                self.values[monitor.rule.keyword] = monitor.result()

    def camera_event(self, moment: CameraMoment, cache: SourceCache, now: float) -> None:
        """One of the camera's events of this image: ``endReadout`` and
        ``endOfImageTelemetry`` are kept (sensors, times), and the moment is reached
        (``endOfImageTelemetry`` is the ``end``)."""
        if isinstance(moment.event, EndReadout):
            self.readout = moment.event
        elif isinstance(moment.event, EndOfImageTelemetry):
            self.end = moment.event
        self.reach(moment.moment, cache, now)

    def observe(self, key: SourceKey, data: dict[str, Any]) -> None:
        """A source message arrived during the exposure: feed the monitors."""
        if not self._monitoring:
            return
        for monitor in self._monitors:
            if self._keys[monitor.rule.keyword] == key:
                value = data.get(monitor.rule.field)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    monitor.values.append(float(value))

    def give_up(self, why: str) -> None:
        """Every moment still pending will not come (``why``): its keywords, and the
        monitors if the end is among them, are missing with that reason, not taken."""
        for moment in sorted(self.pending_moments):
            reason = Missing(f"{why}: no {moment} moment")
            for rule in self._rules:
                if rule.monitor == "latest" and rule.moment == moment:
                    self.values[rule.keyword] = reason
            if moment == "end":
                for monitor in self._monitors:
                    self.values[monitor.rule.keyword] = reason
        self._monitoring = False
        self.pending_moments.clear()

    def ordered(self) -> list[tuple[str, Value | Missing]]:
        """The collected keywords in the map's order."""
        return [
            (r.keyword, self.values[r.keyword]) for r in self._rules if r.keyword in self.values
        ]


@dataclass(frozen=True)
class CameraMoment:
    """A camera event of the image, as a moment of its exposure: ``start``
    (startIntegration), a named event (``startReadout``, ``endReadout``) or ``end``
    (endOfImageTelemetry); ``event`` is the parsed payload."""

    moment: str
    event: object = None


#: One item of an exposure's timeline: (TAI, what, data): a source's message (its key
#: and payload fields) or a camera moment (data unused).
Step = tuple[float, SourceKey | CameraMoment, dict[str, Any]]


def replay(
    start: StartIntegration,
    rules: list[KeywordRule],
    camera_index: int,
    timeline: Iterable[Step],
    cache: SourceCache | None = None,
) -> Exposure:
    """The exposure ``timeline`` makes, by the rules the live service follows: each
    source message updates the cache and feeds the monitors, each camera moment takes
    its keywords, with the step's own time as *now* (what the live service does as the
    messages arrive, here from what was recorded: the EFD). The steps are taken in the
    order given, which must be the time order (the camera's moments included, the
    ``start`` first of them)."""
    cache = cache if cache is not None else SourceCache()
    exposure = Exposure(start, rules, camera_index)
    for now, what, data in timeline:
        if isinstance(what, CameraMoment):
            exposure.camera_event(what, cache, now)
        else:
            cache.update(what, data, now)
            exposure.observe(what, data)
    return exposure
