"""Command parsing and ack codecs (ICD §2), including hostile inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cscs.core.protocol import (
    MAX_COMMAND_BYTES,
    Ack,
    AckCode,
    CommandRequest,
    Refusal,
    Unreadable,
    parse_command,
)
from cscs.core.testing import TestCsc

INTERFACE = TestCsc.interface


def payload(**fields: Any) -> bytes:
    base: dict[str, Any] = {"seq": 7, "origin": "ocs-1", "identity": "night@summit"}
    return json.dumps(base | fields).encode()


def test_valid_command_is_parsed_and_validated() -> None:
    """A good command yields its typed parameters."""
    parsed = parse_command("setLogLevel", payload(params={"level": 10}), INTERFACE)
    assert isinstance(parsed, CommandRequest)
    assert (parsed.seq, parsed.origin, parsed.identity) == (7, "ocs-1", "night@summit")
    assert parsed.params.model_dump() == {"level": 10}


def test_params_may_be_omitted_for_a_command_without_parameters() -> None:
    """`enable` needs no params object."""
    assert isinstance(parse_command("enable", payload(), INTERFACE), CommandRequest)


def test_float_parameter_accepts_an_integer() -> None:
    """JSON has one number type; 2 is a fine duration."""
    parsed = parse_command("wait", payload(params={"duration": 2}), INTERFACE)
    assert isinstance(parsed, CommandRequest)


def refusal(command: str, data: bytes) -> str:
    parsed = parse_command(command, data, INTERFACE)
    assert isinstance(parsed, Refusal), parsed
    assert (parsed.seq, parsed.origin) == (7, "ocs-1")
    return parsed.reason


def test_refusals_name_the_cause() -> None:
    """Each refusal says what was wrong in words an operator can act on."""
    assert refusal("frobnicate", payload()) == "no such command: frobnicate"
    assert "unknown parameter 'lvl'" in refusal("setLogLevel", payload(params={"lvl": 1}))
    assert "missing parameter 'level'" in refusal("setLogLevel", payload(params={}))
    assert "parameter 'level'" in refusal("setLogLevel", payload(params={"level": "10"}))
    assert "parameter 'level'" in refusal("setLogLevel", payload(params={"level": True}))
    assert "'params' must be a JSON object" in refusal("enable", payload(params=[1]))
    assert "identity" in refusal("enable", payload(identity=""))
    assert "identity" in refusal("enable", payload(identity=None))
    big = payload(params={"level": 10}, padding="x" * (2 * 1024 * 1024))
    assert f"exceeds the limit of {MAX_COMMAND_BYTES} bytes" in refusal("setLogLevel", big)


@pytest.mark.parametrize("seq", [-1, 2**63, 10**40])
def test_a_seq_no_database_can_hold_is_refused(seq: int) -> None:
    parsed = parse_command("enable", json.dumps({"seq": seq, "origin": "x", "identity": "a",
                                                 "params": {}}).encode(), INTERFACE)  # fmt: skip
    assert isinstance(parsed, Refusal)
    assert "outside 0 to 2**63 - 1" in parsed.reason


def test_an_origin_too_long_to_remember_is_dropped() -> None:
    data = json.dumps({"seq": 1, "origin": "o" * 257, "identity": "a", "params": {}})
    parsed = parse_command("enable", data.encode(), INTERFACE)
    assert isinstance(parsed, Unreadable)
    assert "origin of 257 characters (at most 256)" in parsed.reason


def test_unreadable_payloads_are_dropped_with_a_reason() -> None:
    """No seq/origin: nobody to answer, so the reason is only logged."""
    cases = {
        b"{nope": "not JSON",
        b"\xff\xfe": "not UTF-8",
        b"[1, 2]": "JSON object",
        json.dumps({"origin": "x"}).encode(): "lacks 'seq'",
        json.dumps({"seq": "1", "origin": "x"}).encode(): "'seq' must be int",
        json.dumps({"seq": True, "origin": "x"}).encode(): "'seq' must be int",
        b"[" * 100_000: "nested too deeply",
    }
    for data, reason in cases.items():
        parsed = parse_command("enable", data, INTERFACE)
        assert isinstance(parsed, Unreadable), data[:20]
        assert reason in parsed.reason, (reason, parsed.reason)


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """No input, however bad, makes the parser raise."""
    assert isinstance(
        parse_command("enable", data, INTERFACE), CommandRequest | Refusal | Unreadable
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    command=st.sampled_from([c.name for c in INTERFACE.commands] + ["nope"]),
    params=st.dictionaries(st.text(max_size=20), json_values, max_size=5),
)
def test_arbitrary_params_are_accepted_only_when_valid(
    command: str, params: dict[str, Any]
) -> None:
    """Whatever the params, the answer is a request with validated params or a refusal."""
    parsed = parse_command(command, payload(params=params), INTERFACE)
    if isinstance(parsed, CommandRequest):
        spec = INTERFACE.command(command)
        assert spec is not None
        assert set(parsed.params.model_dump()) >= set(params)
    else:
        assert isinstance(parsed, Refusal)
        assert parsed.reason


@given(
    seq=st.integers(min_value=-(2**53), max_value=2**53),
    origin=st.text(),
    command=st.text(),
    code=st.sampled_from(list(AckCode)),
    result=st.text(),
    timeout=st.floats(min_value=0, max_value=1e6),
)
def test_ack_round_trips_through_json(
    seq: int, origin: str, command: str, code: AckCode, result: str, timeout: float
) -> None:
    """An ack read back from its wire form is the same ack."""
    ack = Ack(seq, origin, command, code, result, timeout=timeout, sent_tai=1.5)
    wire = json.loads(json.dumps(ack.to_wire()))
    assert wire["ack"] == code.name
    assert wire["code"] == int(code)
    assert Ack.from_wire(wire) == ack


def test_final_codes() -> None:
    """ACK and INPROGRESS are the only non-final acks."""
    assert {c for c in AckCode if not c.is_final} == {AckCode.ACK, AckCode.INPROGRESS}
