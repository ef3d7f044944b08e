"""Observing scripts: parsing and expansion without a broker, and runs against a CSC."""

from __future__ import annotations

import contextlib
import textwrap
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from cscs.core.protocol import AckCode
from cscs.core.states import State
from cscs.core.testing import TestCsc, make_csc
from cscs.core.transport import Connector
from cscs.ocs.runner import run_script
from cscs.ocs.script import (
    Command,
    Say,
    ScriptError,
    ScriptStepError,
    Wait,
    expand,
    load_script,
    parse_script,
    resolve_hour_angles,
)
from sim.site.demo import NIGHT_SCRIPT, images_commanded


def script(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def test_shipped_night_covers_calibrations_and_science_for_each_camera() -> None:
    """The demo's night: every CSC brought up, 10 images, filter changes, two fields."""
    night = load_script(NIGHT_SCRIPT)
    for index, prefix in ((1, "Camera:1"), (2, "Camera:2")):
        steps = [b.step for b in expand(night, {"index": index, "config": "fast"})]
        commands = [s for s in steps if isinstance(s, Command)]
        assert {c.csc for c in commands if c.name == "enable"} == {
            "Weather:0", f"Telescope:{index}", f"HeaderService:{index}",
            f"Archiver:{index}", f"OODS:{index}", "OCSBatch:0", "TelemetryGateway:0", prefix,
        }  # fmt: skip
        kinds = [c.params["imageType"] for c in commands if c.name == "takeImages"]
        assert kinds == ["BIAS", "DARK", "FLAT", "OBJECT", "OBJECT", "OBJECT", "OBJECT"]
        filters = [c.params["filter"] for c in commands if c.name == "setFilter"]
        assert filters == ["r", "g", "r"]
        slews = [c.params for c in commands if c.name == "slew"]
        assert [s["ra"] for s in slews] == [{"hour_angle": -0.7}, {"hour_angle": 1.0}]
        assert all(isinstance(s["dec"], float) for s in slews)  # "{dec}" keeps its type
        assert images_commanded(night, {"index": index}) == 13


def test_numbers_and_lines_point_into_the_file() -> None:
    parsed = parse_script(
        script("""
        steps:
          - say: one
          - loop:
              over: [{a: 1}, {a: 2}]
              steps:
                - command: {csc: "Test:{a}", name: ping}
        """)
    )
    steps = expand(parsed)
    assert [(b.number, type(b.step).__name__) for b in steps] == [
        (1, "Say"), (2, "Command"), (3, "Command"),
    ]  # fmt: skip
    assert [b.step.csc for b in steps[1:]] == ["Test:1", "Test:2"]  # type: ignore[union-attr]
    assert steps[1].step.line == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: [", "not valid YAML"),
        ("- a\n- b\n", "a script is a mapping"),
        ("steps: []\n", "`steps:` must be a non-empty list"),
        ("stepz: []\n", "unknown key(s) stepz"),
        ("steps:\n  - jump: {}\n", "line 2: unknown step 'jump'; steps are say"),
        ("steps:\n  - {say: a, wait: b}\n", "line 2: each step is a mapping with exactly one"),
        ("steps:\n  - command: {csc: 'Test:1'}\n", "line 2: a command needs `name:`"),
        ("steps:\n  - command: {name: ping}\n", "needs `csc: NAME:INDEX`"),
        ("steps:\n  - command: {csc: 'Test:1', name: x, expect: LATER}\n", "not a final ack"),
        ("steps:\n  - command: {csc: 'Test:1', name: x, timeout: -1}\n", "positive number"),
        ("steps:\n  - command: {csc: 'Test:1', name: x, colour: red}\n", "unknown key(s) colour"),
        ("steps:\n  - wait: {csc: 'Test:1'}\n", "exactly one of `state`, `event`, `telemetry`"),
        ("steps:\n  - wait: {csc: 'Test:1', state: ASLEEP}\n", "unknown state 'ASLEEP'"),
        ("steps:\n  - loop: {steps: [{say: x}]}\n", "either `count: N` or `over:"),
        ("steps:\n  - loop: {count: -1, steps: [{say: x}]}\n", "whole number"),
        ("steps:\n  - loop: {count: 1, steps: []}\n", "non-empty `steps:`"),
    ],
)
def test_a_bad_script_is_refused_with_its_line_and_cause(text: str, message: str) -> None:
    with pytest.raises(ScriptError, match=r"^<script>") as caught:
        parse_script(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps:\n  - command: {csc: 'Test:{i}', name: ping}\n", "line 2: no variable 'i'"),
        ("steps:\n  - command: {csc: 'Test:one', name: ping}\n", "line 2: 'Test:one' is not"),
    ],
)
def test_every_address_and_variable_is_checked_before_anything_runs(
    text: str, message: str
) -> None:
    with pytest.raises(ScriptError) as caught:
        expand(parse_script(text))
    assert message in str(caught.value)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "steps",
                    "vars",
                    "name",
                    "say",
                    "command",
                    "wait",
                    "loop",
                    "csc",
                    "state",
                    "event",
                    "count",
                    "over",
                    "params",
                    "expect",
                    "timeout",
                    "where",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(yaml_values)
def test_any_document_is_a_script_or_a_script_error(document: Any) -> None:
    """Hostile files: whatever the YAML holds, the operator gets a ScriptError, never a
    traceback from deep inside the runner."""
    text = yaml.safe_dump(document)
    with contextlib.suppress(ScriptError):
        expand(parse_script(text), {"i": 1})


@given(st.text(max_size=200))
def test_any_text_is_a_script_or_a_script_error(text: str) -> None:
    with contextlib.suppress(ScriptError):
        parse_script(text)


def test_hour_angle_targets_follow_the_sky() -> None:
    params = {"ra": {"hour_angle": 1.0}, "dec": -30.0, "nested": [{"hour_angle": -2}]}
    assert resolve_hour_angles(params, lst_deg=10.0) == {
        "ra": 355.0, "dec": -30.0, "nested": [40.0],
    }  # fmt: skip


# ---- against a CSC ----------------------------------------------------------------------


async def test_script_drives_a_csc_and_checks_outcomes(broker: Connector, index: int) -> None:
    """Commands, an expected refusal with its text, waits for a state and an event."""
    text = script(f"""
        steps:
          - wait: {{csc: "Test:{index}", state: STANDBY}}
          - command: {{csc: "Test:{index}", name: ping, expect: FAILED, result: "STANDBY"}}
          - command: {{csc: "Test:{index}", name: start}}
          - command: {{csc: "Test:{index}", name: enable}}
          - wait: {{csc: "Test:{index}", state: ENABLED}}
          - command: {{csc: "Test:{index}", name: fail, params: {{reason: nope}},
                       expect: FAILED, result: nope}}
          - command: {{csc: "Test:{index}", name: setScalars, params: {{value: 7, text: hi}}}}
          - wait: {{csc: "Test:{index}", event: scalars, where: {{value: 7}}}}
        """)
    async with make_csc(TestCsc, broker, index=index) as h:
        assert await run_script(h.bus, parse_script(text)) == 8
        assert h.csc.state is State.ENABLED


async def test_a_failing_step_names_the_step_the_command_and_the_answer(
    broker: Connector, index: int
) -> None:
    text = script(f"""
        name: broken night
        steps:
          - say: getting ready
          - command: {{csc: "Test:{index}", name: start}}
          - command: {{csc: "Test:{index}", name: enable}}
          - command: {{csc: "Test:{index}", name: fail, params: {{reason: "the dome is shut"}}}}
          - command: {{csc: "Test:{index}", name: disable}}
        """)
    async with make_csc(TestCsc, broker, index=index) as h:
        with pytest.raises(ScriptStepError) as caught:
            await run_script(h.bus, parse_script(text, source="night.yaml"))
        assert h.csc.state is State.ENABLED  # the steps before ran; none after
    assert str(caught.value) == (
        f"night.yaml: step 4 (line 6), command fail to Test:{index}: expected COMPLETE, "
        f"came back FAILED {int(AckCode.FAILED)}: the dome is shut"
    )


async def test_a_wait_that_times_out_says_what_it_saw(broker: Connector, index: int) -> None:
    text = f"steps:\n  - wait: {{csc: 'Test:{index}', state: ENABLED, timeout: 0.5}}\n"
    async with make_csc(TestCsc, broker, index=index) as h:
        with pytest.raises(ScriptStepError) as caught:
            await run_script(h.bus, parse_script(text))
    assert f"step 1 (line 2), wait for Test:{index} to be ENABLED" in str(caught.value)
    assert "not within 0.5 s; its state is STANDBY" in str(caught.value)


def test_steps_are_plain_data() -> None:
    """What the runner gets is inspectable (the demo counts images from it)."""
    bound = expand(parse_script("steps:\n  - say: hi\n  - wait: {csc: 'A:1', event: e}\n"))
    assert isinstance(bound[0].step, Say)
    assert isinstance(bound[1].step, Wait)


def test_an_error_inside_a_loop_names_its_own_line_once() -> None:
    text = "steps:\n  - loop:\n      count: 1\n      steps:\n        - say: '{nope}'\n"
    with pytest.raises(ScriptError) as caught:
        expand(parse_script(text))
    assert str(caught.value) == "<script>, line 5: no variable 'nope'; known: none"
