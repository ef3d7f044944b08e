"""Typed declarations of a CSC's commands, events and telemetry: the code's ICD.

Every payload is a pydantic model. Command parameters are strict and closed (unknown or
ill-typed parameters are refused at the boundary); event and telemetry payloads are
closed too, so a CSC cannot publish a field the interface does not declare.
``docs/interface.md`` is generated from these declarations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from cscs.core.states import State
from cscs.core.topics import CscAddress, Kind

__all__ = [
    "ANY_WORKING_STATE",
    "ENABLED_ONLY",
    "CommandSpec",
    "EventSpec",
    "Interface",
    "NoParams",
    "Payload",
    "TelemetrySpec",
    "first_problem",
    "parse_payload",
]


class Payload(BaseModel):
    """Base of every wire payload: closed, strict, immutable."""

    # Attribute docstrings become field descriptions, shown in docs/interface.md.
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True
    )


class NoParams(Payload):
    """Parameters of a command that takes none."""


P = TypeVar("P", bound=Payload, covariant=True)
M = TypeVar("M", bound=Payload)


def first_problem(exc: ValidationError, whole: str = "payload") -> str:
    """The first thing wrong, as ``field.subfield: message`` (``whole`` if no field)."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or whole
    return f"{where}: {error['msg']}"


def parse_payload(model: type[M], data: Mapping[str, Any]) -> M:
    """A received event or telemetry payload as ``model``; ValueError naming the first
    bad field otherwise. Fields the model lacks (``seq``, ``sent_tai``, and whatever a
    publisher adds, as the ICD allows) are ignored; declared ones are checked strictly."""
    known = {k: v for k, v in data.items() if k in model.model_fields}
    try:
        return model.model_validate(known)
    except ValidationError as exc:
        raise ValueError(f"{model.__name__}: {first_problem(exc)}") from None


ENABLED_ONLY: frozenset[State] = frozenset({State.ENABLED})
ANY_WORKING_STATE: frozenset[State] = frozenset(
    {State.STANDBY, State.DISABLED, State.ENABLED, State.FAULT}
)


@dataclass(frozen=True)
class CommandSpec(Generic[P]):
    """A command: its parameters, the states that accept it, and how long it may take.

    ``allowed_states`` is None for life-cycle commands, whose states come from the
    transition table; component commands default to ENABLED only (ICD §3).
    """

    name: str
    params: type[P]
    doc: str
    allowed_states: frozenset[State] | None = ENABLED_ONLY
    timeout: float | None = None


@dataclass(frozen=True)
class EventSpec(Generic[P]):
    """An event; ``retained`` for state-like events whose latest value is "how it is now"."""

    name: str
    payload: type[P]
    doc: str
    retained: bool = False
    qos: int = 1
    kind: Kind = field(default=Kind.EVENT, init=False)

    def topic(self, address: CscAddress) -> str:
        return address.event(self.name)


@dataclass(frozen=True)
class TelemetrySpec(Generic[P]):
    """A telemetry topic: QoS 0, never retained (ICD §1)."""

    name: str
    payload: type[P]
    doc: str
    qos: int = field(default=0, init=False)
    retained: bool = field(default=False, init=False)
    kind: Kind = field(default=Kind.TELEMETRY, init=False)

    def topic(self, address: CscAddress) -> str:
        return address.telemetry(self.name)


@dataclass(frozen=True)
class Interface:
    """Everything a CSC says and hears on the bus, declared once."""

    name: str
    doc: str
    commands: tuple[CommandSpec[Payload], ...] = ()
    events: tuple[EventSpec[Payload], ...] = ()
    telemetry: tuple[TelemetrySpec[Payload], ...] = ()

    def __post_init__(self) -> None:
        for kind, specs in (
            ("command", self.commands),
            ("event", self.events),
            ("telemetry", self.telemetry),
        ):
            names = [s.name for s in specs]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{self.name}: {kind} declared twice: {', '.join(duplicates)}")

    def extended(
        self,
        name: str,
        doc: str,
        commands: Iterable[CommandSpec[Payload]] = (),
        events: Iterable[EventSpec[Payload]] = (),
        telemetry: Iterable[TelemetrySpec[Payload]] = (),
    ) -> Interface:
        """This interface plus a component's own topics (the generic ones come first)."""
        return Interface(
            name=name,
            doc=doc,
            commands=self.commands + tuple(commands),
            events=self.events + tuple(events),
            telemetry=self.telemetry + tuple(telemetry),
        )

    def command(self, name: str) -> CommandSpec[Payload] | None:
        return next((c for c in self.commands if c.name == name), None)

    def event(self, name: str) -> EventSpec[Payload] | None:
        return next((e for e in self.events if e.name == name), None)
