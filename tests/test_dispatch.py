"""What becomes of a command message, decided without I/O: dropped (with why), answered
at once, or run."""

from __future__ import annotations

import json
from typing import Any

from cscs.core.auth import AuthList
from cscs.core.dispatch import Dropped, triage
from cscs.core.protocol import Ack, AckCode, CommandRequest
from cscs.core.states import State
from cscs.core.testing import TestCsc
from cscs.core.topics import CscAddress
from cscs.core.transport import Message

ADDRESS = CscAddress("Test", 1)


def decide(
    command: str,
    body: dict[str, Any] | bytes,
    *,
    state: State = State.ENABLED,
    auth: AuthList | None = None,
    retain: bool = False,
) -> Dropped | Ack | CommandRequest:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    message = Message(ADDRESS.command(command), payload, retain)
    return triage(
        message, TestCsc.interface, address=ADDRESS, state=state, auth=auth or AuthList(),
        own_identity="csc@host",
    )  # fmt: skip


def body(**params: Any) -> dict[str, Any]:
    return {"seq": 7, "origin": "ocs", "identity": "night@summit", "params": params}


def test_a_good_command_in_its_state_is_run() -> None:
    decision = decide("fail", body(reason="x"))
    assert isinstance(decision, CommandRequest)
    assert (decision.command, decision.seq, decision.origin) == ("fail", 7, "ocs")


def test_a_retained_command_is_dropped_never_run() -> None:
    decision = decide("ping", body(), retain=True)
    assert isinstance(decision, Dropped)
    assert "retained" in decision.what
    assert decision.reason == "ping"


def test_an_unreadable_payload_is_dropped_naming_why() -> None:
    decision = decide("ping", b"{oops")
    assert isinstance(decision, Dropped)
    assert "payload is not JSON" in decision.reason


def test_a_refusal_is_answered_failed_with_the_reason() -> None:
    decision = decide("ping", body(extra=1))
    assert isinstance(decision, Ack)
    assert (decision.code, decision.seq, decision.error) == (AckCode.FAILED, 7, 1)
    assert "unknown parameter 'extra'" in decision.result


def test_an_unauthorized_identity_gets_noperm_before_any_state_check() -> None:
    decision = decide("ping", body(), state=State.STANDBY, auth=AuthList(frozenset({"a@b"})))
    assert isinstance(decision, Ack)
    assert decision.code is AckCode.NOPERM
    assert decision.result == "night@summit is not authorized to command Test:1"


def test_a_component_command_outside_enabled_is_refused_naming_the_state() -> None:
    decision = decide("ping", body(), state=State.DISABLED)
    assert isinstance(decision, Ack)
    assert decision.result == "ping not allowed in state DISABLED (needs ENABLED)"


def test_life_cycle_commands_are_left_to_the_life_cycle() -> None:
    """Their states come from the transition table, checked when they run."""
    assert isinstance(decide("enable", body(), state=State.STANDBY), CommandRequest)
