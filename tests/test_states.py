"""The life-cycle table of ICD §3, without a broker."""

from __future__ import annotations

import pytest

from cscs.core.states import LIFECYCLE, Lifecycle, State

LEGAL = {(t.command, s): t.dest for t in LIFECYCLE for s in t.sources}
WORKING = [State.STANDBY, State.DISABLED, State.ENABLED, State.FAULT]


@pytest.mark.parametrize("state", WORKING)
@pytest.mark.parametrize("command", [t.command for t in LIFECYCLE])
def test_every_command_from_every_state(state: State, command: str) -> None:
    """Legal transitions go where the ICD says; illegal ones are refused naming the state."""
    lifecycle = Lifecycle(state)
    if (command, state) in LEGAL:
        assert lifecycle.refusal(command) is None
        assert lifecycle.apply(command) is LEGAL[(command, state)]
    else:
        assert lifecycle.refusal(command) == f"{command} not allowed in state {state.name}"
        with pytest.raises(ValueError, match=state.name):
            lifecycle.apply(command)
        assert lifecycle.state is state


def test_codes_are_those_of_the_icd() -> None:
    """DISABLED=1 ENABLED=2 FAULT=3 OFFLINE=4 STANDBY=5."""
    assert [(s.name, int(s)) for s in State] == [
        ("DISABLED", 1),
        ("ENABLED", 2),
        ("FAULT", 3),
        ("OFFLINE", 4),
        ("STANDBY", 5),
    ]


@pytest.mark.parametrize("state", [State.STANDBY, State.DISABLED, State.ENABLED])
def test_fault_from_working_states_and_only_standby_leaves_it(state: State) -> None:
    """A CSC can fault from any working state; only standby leaves FAULT."""
    lifecycle = Lifecycle(state)
    assert lifecycle.fault()
    assert lifecycle.state is State.FAULT
    assert not lifecycle.fault()
    for command in ("start", "enable", "disable", "exitControl"):
        assert lifecycle.refusal(command) is not None
    assert lifecycle.apply("standby") is State.STANDBY


def test_restore_rolls_back() -> None:
    """restore() is the rollback used when an end hook fails."""
    lifecycle = Lifecycle(State.DISABLED)
    lifecycle.apply("enable")
    lifecycle.restore(State.DISABLED)
    assert lifecycle.state is State.DISABLED
