"""A test harness shipped with the package, for this project's tests and for users'.

* :class:`TestCsc` — a small CSC with component commands that succeed, fail, run long
  or misbehave on demand; ``cscs run Test`` starts it.
* :func:`make_csc` — run a CSC and a :class:`Remote` to it on a broker.
* :func:`check_standard_state_transitions` and :func:`check_bad_commands` — the checks
  every CSC must pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cscs.core.bus import BrokerAddress, Bus
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.config import ConfigSchema
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.generic import GENERIC
from cscs.core.protocol import AckCode
from cscs.core.remote import Remote
from cscs.core.schema import (
    CommandSpec,
    EventSpec,
    NoParams,
    Payload,
    TelemetrySpec,
)
from cscs.core.states import LIFECYCLE, State
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress

__all__ = [
    "CscHarness",
    "TestCsc",
    "check_bad_commands",
    "check_standard_state_transitions",
    "make_csc",
    "send_raw",
]


# ---- the test CSC ------------------------------------------------------------------------


class WaitParams(Payload):
    duration: float
    """Seconds to run; the command announces INPROGRESS with this timeout first."""


class FailParams(Payload):
    reason: str = "told to fail"


class ScalarsParams(Payload):
    value: int
    text: str = ""


class Scalars(Payload):
    value: int
    text: str


class TestConfig(ConfigSchema):
    greeting: str = "hello"
    wait_scale: float = 1.0


PING = CommandSpec("ping", NoParams, "Answer COMPLETE at once (latency probe).")
WAIT = CommandSpec("wait", WaitParams, "Run for `duration` seconds.", timeout=60.0)
FAIL = CommandSpec("fail", FailParams, "Fail with ExpectedError(`reason`).")
BUG = CommandSpec("bug", NoParams, "Raise an unexpected exception (a bug).")
SLOW = CommandSpec("slow", NoParams, "Outlive its 0.1 s timeout.", timeout=0.1)
FAULT = CommandSpec("fault", NoParams, "Go to FAULT with errorCode 42.")
SET_SCALARS = CommandSpec("setScalars", ScalarsParams, "Publish the `scalars` event.")
SCALARS = EventSpec("scalars", Scalars, "Echo of setScalars.")
SCALARS_TEL = TelemetrySpec("scalars", Scalars, "Echo of setScalars, as telemetry.")


class TestCsc(BaseCsc):
    """A CSC whose component commands exercise every outcome of the command protocol."""

    __test__ = False  # not a pytest test class
    interface = GENERIC.extended(
        "Test",
        "A CSC for testing the framework and the bus.",
        commands=(PING, WAIT, FAIL, BUG, SLOW, FAULT, SET_SCALARS),
        events=(SCALARS,),
        telemetry=(SCALARS_TEL,),
    )
    config_schema = TestConfig
    default_config_dir: ClassVar[Path | None] = Path(__file__).parent / "test_config"

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [
            bind(PING, self.do_ping),
            bind(WAIT, self.do_wait),
            bind(FAIL, self.do_fail),
            bind(BUG, self.do_bug),
            bind(SLOW, self.do_slow),
            bind(FAULT, self.do_fault),
            bind(SET_SCALARS, self.do_set_scalars),
        ]

    async def do_ping(self, params: NoParams, context: CommandContext) -> None:
        return None

    async def do_wait(self, params: WaitParams, context: CommandContext) -> str:
        await context.in_progress(params.duration, "waiting")
        await asyncio.sleep(params.duration)
        return f"waited {params.duration:g} s"

    async def do_fail(self, params: FailParams, context: CommandContext) -> None:
        raise ExpectedError(params.reason)

    async def do_bug(self, params: NoParams, context: CommandContext) -> None:
        raise ZeroDivisionError("division by zero (deliberate)")

    async def do_slow(self, params: NoParams, context: CommandContext) -> None:
        await asyncio.sleep(10)

    async def do_fault(self, params: NoParams, context: CommandContext) -> None:
        await self.fault(42, "told to fault")

    async def do_set_scalars(self, params: ScalarsParams, context: CommandContext) -> None:
        scalars = Scalars(value=params.value, text=params.text)
        await self.publish_event(SCALARS, scalars)
        await self.publish_telemetry(SCALARS_TEL, scalars)


# ---- the harness ---------------------------------------------------------------------------

_TEST_CONNECT_TIMEOUT = 30.0


@dataclass
class CscHarness:
    csc: BaseCsc
    remote: Remote
    bus: Bus


@contextlib.asynccontextmanager
async def make_csc(
    factory: Callable[..., BaseCsc],
    broker: BrokerAddress,
    *,
    index: int = 1,
    initial_state: State = State.STANDBY,
    identity: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[CscHarness]:
    """Run a CSC and a Remote to it (on its own connection) until the block ends.

    Connections get 30 s: a loaded test machine can keep a broker that long."""
    kwargs.setdefault("connect_timeout", _TEST_CONNECT_TIMEOUT)
    csc = factory(index, broker=broker, initial_state=initial_state, **kwargs)
    bus = Bus(broker, connect_timeout=_TEST_CONNECT_TIMEOUT)
    async with csc, bus, Remote(bus, csc.address, identity=identity) as remote:
        await remote.wait_for_state(initial_state)
        yield CscHarness(csc, remote, bus)


_TO_STATE = {
    State.STANDBY: {State.DISABLED: ["start"], State.ENABLED: ["start", "enable"]},
    State.DISABLED: {State.STANDBY: ["standby"], State.ENABLED: ["enable"]},
    State.ENABLED: {State.DISABLED: ["disable"], State.STANDBY: ["disable", "standby"]},
}


async def _go_to(remote: Remote, current: State, target: State) -> None:
    for command in _TO_STATE[current].get(target, []):
        await remote.command(command)


async def check_standard_state_transitions(
    remote: Remote,
    enabled_commands: Mapping[str, Mapping[str, Any]] | None = None,
    timeout: float = 10.0,
) -> None:
    """Every life-cycle command from every working state: legal ones move the CSC where
    ICD §3 says, illegal ones are FAILED naming the state and change nothing.

    ``enabled_commands`` maps component commands to valid parameters: each must be
    refused outside ENABLED. Leaves the CSC in STANDBY.
    """
    working = (State.STANDBY, State.DISABLED, State.ENABLED)
    for state in working:
        current = State((await remote.next_event("summaryState", timeout)).data["summaryState"])
        await _go_to(remote, current, state)
        for transition in LIFECYCLE:
            if state in transition.sources:
                continue
            ack = await remote.command(transition.command, timeout=timeout, check=False)
            expected = f"{transition.command} not allowed in state {state.name}"
            assert ack.code is AckCode.FAILED, ack
            assert expected in ack.result, (expected, ack.result)
        if state is not State.ENABLED:
            for command, params in (enabled_commands or {}).items():
                ack = await remote.command(command, params, timeout=timeout, check=False)
                assert ack.code is AckCode.FAILED, ack
                assert f"not allowed in state {state.name}" in ack.result, ack.result
        for transition in LIFECYCLE:
            if state not in transition.sources or transition.dest is State.OFFLINE:
                continue
            await remote.command(transition.command, timeout=timeout)
            now = State((await remote.next_event("summaryState", timeout)).data["summaryState"])
            assert now is transition.dest, (transition, now)
            await _go_to(remote, transition.dest, state)
    current = State((await remote.next_event("summaryState", timeout)).data["summaryState"])
    await _go_to(remote, current, State.STANDBY)


async def send_raw(bus: Bus, address: CscAddress, command: str, payload: bytes) -> None:
    """Publish any bytes as a command: for hostile-input tests."""
    await bus.publish(address.command(command), payload, qos=1)


async def check_bad_commands(remote: Remote, timeout: float = 10.0) -> None:
    """Bad commands get FAILED naming the cause; the CSC still answers afterwards."""
    checks: list[tuple[str, dict[str, Any], str]] = [
        ("noSuchCommand", {}, "no such command: noSuchCommand"),
        ("setLogLevel", {"level": "loud"}, "parameter 'level'"),
        ("setLogLevel", {}, "missing parameter 'level'"),
        ("setLogLevel", {"level": 20, "colour": "red"}, "unknown parameter 'colour'"),
        ("start", {"configurationOverride": 3}, "parameter 'configurationOverride'"),
    ]
    for command, params, expected in checks:
        ack = await remote.command(command, params, timeout=timeout, check=False)
        assert ack.code is AckCode.FAILED, (command, params, ack)
        assert expected in ack.result, (expected, ack.result)
    bad_payloads = [
        ("{not json", "not JSON"),
        (json.dumps({"seq": 1}), "lacks"),
        (json.dumps([1, 2, 3]), "JSON object"),
    ]
    for payload, _ in bad_payloads:
        await send_raw(remote.bus, remote.address, "enable", payload.encode())
    # A payload that still has seq and origin but no identity is answered FAILED.
    seq = next(remote.bus.command_seqs)
    async with remote.bus.subscription(remote.address.ack) as acks:
        body = {"seq": seq, "origin": remote.bus.client_id, "sent_tai": current_tai()}
        await send_raw(remote.bus, remote.address, "enable", json.dumps(body).encode())
        while True:
            message = await acks.get(timeout)
            data = json.loads(message.payload)
            if data["seq"] == seq and data["origin"] == remote.bus.client_id:
                assert data["ack"] == "FAILED", data
                assert "identity" in data["result"], data
                break
    await remote.command("setLogLevel", {"level": 20}, timeout=timeout)
