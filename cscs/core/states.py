"""The CSC life cycle of ICD §3 as data: one table drives every CSC.

The table is turned into a ``transitions`` state machine, which holds the summary
state; nothing here does I/O, so the life cycle is tested without a broker.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from transitions import Machine

__all__ = [
    "FAULT_SOURCES",
    "LIFECYCLE",
    "LIFECYCLE_COMMANDS",
    "Lifecycle",
    "State",
    "Transition",
]


class State(enum.IntEnum):
    """Summary states with the codes of ICD §3."""

    DISABLED = 1
    ENABLED = 2
    FAULT = 3
    OFFLINE = 4
    STANDBY = 5


@dataclass(frozen=True)
class Transition:
    """A life-cycle command: allowed from ``sources``, it moves the CSC to ``dest``."""

    command: str
    sources: frozenset[State]
    dest: State


LIFECYCLE: tuple[Transition, ...] = (
    Transition("start", frozenset({State.STANDBY}), State.DISABLED),
    Transition("enable", frozenset({State.DISABLED}), State.ENABLED),
    Transition("disable", frozenset({State.ENABLED}), State.DISABLED),
    Transition("standby", frozenset({State.DISABLED, State.FAULT}), State.STANDBY),
    Transition("exitControl", frozenset({State.STANDBY}), State.OFFLINE),
)
LIFECYCLE_COMMANDS: frozenset[str] = frozenset(t.command for t in LIFECYCLE)

# A CSC may fall into FAULT by itself from any working state.
FAULT_SOURCES: frozenset[State] = frozenset({State.STANDBY, State.DISABLED, State.ENABLED})
_FAULT_TRIGGER = "fault"


class _Model:
    """The object whose ``state`` attribute the ``transitions`` machine drives."""

    state: str


class Lifecycle:
    """Holds a CSC's summary state and knows which commands may change it."""

    def __init__(self, initial: State = State.STANDBY) -> None:
        self._model = _Model()
        transitions = [
            {
                "trigger": t.command,
                "source": sorted(s.name for s in t.sources),
                "dest": t.dest.name,
            }
            for t in LIFECYCLE
        ]
        transitions.append(
            {
                "trigger": _FAULT_TRIGGER,
                "source": sorted(s.name for s in FAULT_SOURCES),
                "dest": State.FAULT.name,
            }
        )
        self._machine = Machine(
            model=self._model,
            states=[s.name for s in State],
            transitions=transitions,
            initial=initial.name,
            auto_transitions=False,
        )

    @property
    def state(self) -> State:
        return State[self._model.state]

    def allows(self, command: str) -> bool:
        """Whether ``command`` (a life-cycle command or ``fault``) may run now."""
        return command in self._machine.get_triggers(self._model.state)

    def refusal(self, command: str) -> str | None:
        """The reason ``command`` is refused in the current state, or None if allowed."""
        if self.allows(command):
            return None
        return f"{command} not allowed in state {self.state.name}"

    def apply(self, command: str) -> State:
        """Make the transition of ``command``; the caller checked :meth:`allows`."""
        if not self.allows(command):
            raise ValueError(self.refusal(command))
        self._machine.events[command].trigger(self._model)
        return self.state

    def fault(self) -> bool:
        """Go to FAULT; False if the current state cannot fault (already FAULT, OFFLINE)."""
        if not self.allows(_FAULT_TRIGGER):
            return False
        self.apply(_FAULT_TRIGGER)
        return True

    def restore(self, state: State) -> None:
        """Put the state back after an end hook failed (the rollback of ts_salobj)."""
        self._machine.set_state(state.name, model=self._model)
