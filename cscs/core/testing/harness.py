"""Running a CSC under test and the checks every CSC must pass.

* :func:`make_csc` — run a CSC and a :class:`Remote` to it on any
  :class:`~cscs.core.transport.Connector`: a :class:`~cscs.core.testing.MemoryBroker`
  for unit tests, a real broker for system tests; :func:`enabled_csc` — the same,
  started with a configuration override the test writes, and enabled.
* :func:`check_standard_state_transitions` and :func:`check_bad_commands` — the life
  cycle and the command protocol as ICD §2-3 write them, for any CSC.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cscs.core import generic as g
from cscs.core.csc import BaseCsc
from cscs.core.protocol import AckCode
from cscs.core.remote import Remote
from cscs.core.settings import Settings
from cscs.core.states import LIFECYCLE, State
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress
from cscs.core.transport import Connector, Transport

__all__ = [
    "CscHarness",
    "check_bad_commands",
    "check_standard_state_transitions",
    "enabled_csc",
    "make_csc",
    "send_raw",
]

_TEST_CONNECT_TIMEOUT = 30.0


@dataclass
class CscHarness:
    csc: BaseCsc[Any]
    remote: Remote
    bus: Transport


@contextlib.asynccontextmanager
async def make_csc(
    factory: Callable[..., BaseCsc[Any]],
    broker: Connector,
    *,
    index: int = 1,
    settings: Settings | None = None,
    initial_state: State = State.STANDBY,
    identity: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[CscHarness]:
    """Run a CSC and a Remote to it (on its own connection) until the block ends.

    Without ``settings``, the CSC keeps its state in a temporary directory removed at the
    end (never the user's ``~/.local/state/cscs``). Connections get 30 s: a loaded test
    machine can keep a broker that long."""
    kwargs.setdefault("connect_timeout", _TEST_CONNECT_TIMEOUT)
    with contextlib.ExitStack() as temporary:
        if settings is None:
            state = temporary.enter_context(tempfile.TemporaryDirectory(prefix="cscs-test-"))
            settings = Settings(state_dir=Path(state))
        csc = factory(
            index, broker=broker, settings=settings, initial_state=initial_state, **kwargs
        )
        bus = broker.transport(connect_timeout=_TEST_CONNECT_TIMEOUT)
        async with csc, bus, Remote(bus, csc.address, identity=identity) as remote:
            await remote.wait_for_state(initial_state)
            yield CscHarness(csc, remote, bus)


@contextlib.asynccontextmanager
async def enabled_csc(
    factory: type[BaseCsc[Any]],
    broker: Connector,
    tmp_path: Path,
    prefix: str,
    config: Mapping[str, Any],
    *,
    index: int = 0,
) -> AsyncIterator[CscHarness]:
    """``factory``'s CSC on ``prefix``, started with ``config`` as its ``test``
    override (written under ``tmp_path/config``) and enabled; its state in
    ``tmp_path/state``."""
    configs = tmp_path / "config" / factory.interface.name
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "test.yaml").write_text(yaml.safe_dump(dict(config)))
    settings = Settings(prefix=prefix, state_dir=tmp_path / "state",
                        config_dir=tmp_path / "config")  # fmt: skip
    async with make_csc(factory, broker, index=index, settings=settings) as harness:
        await harness.remote.command("start", {"configurationOverride": "test"}, timeout=60)
        await harness.remote.command("enable")
        yield harness


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
        await _go_to(remote, await remote.state(timeout), state)
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
            now = await remote.state(timeout)
            assert now is transition.dest, (transition, now)
            await _go_to(remote, transition.dest, state)
    await _go_to(remote, await remote.state(timeout), State.STANDBY)


async def send_raw(bus: Transport, address: CscAddress, command: str, payload: bytes) -> None:
    """Publish any bytes as a command: for hostile-input tests."""
    await bus.publish(address.command(command), payload, qos=1)


async def check_bad_commands(remote: Remote, timeout: float = 10.0) -> None:
    """Bad commands get FAILED naming the cause, unanswerable ones are logged naming the
    cause, and the CSC still answers afterwards."""
    refusals: list[tuple[str, dict[str, Any], str]] = [
        ("noSuchCommand", {}, "no such command: noSuchCommand"),
        ("setLogLevel", {"level": "loud"}, "parameter 'level'"),
        ("setLogLevel", {}, "missing parameter 'level'"),
        ("setLogLevel", {"level": 20, "colour": "red"}, "unknown parameter 'colour'"),
        ("start", {"configurationOverride": 3}, "parameter 'configurationOverride'"),
    ]
    for command, params, expected in refusals:
        ack = await remote.command(command, params, timeout=timeout, check=False)
        assert ack.code is AckCode.FAILED, (command, params, ack)
        assert expected in ack.result, (expected, ack.result)
    # Payloads without a readable seq and origin: nobody to answer, so a logMessage
    # (WARNING) must say why each was dropped.
    unanswerable = [
        (b"{not json", "payload is not JSON"),
        (json.dumps({"seq": 1}).encode(), "payload lacks 'origin'"),
        (json.dumps([1, 2, 3]).encode(), "payload must be a JSON object, got list"),
        (b"\xff\xfe", "payload is not UTF-8"),
    ]
    async with remote.events(g.LOG_MESSAGE) as logs:
        for payload, expected in unanswerable:
            await send_raw(remote.bus, remote.address, "enable", payload)
            record = await logs.wait_for(
                lambda r: "dropped an unreadable command" in r.data.message, timeout
            )
            assert record.data.level == logging.WARNING, record.data
            assert expected in record.data.message, (expected, record.data.message)
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
                assert "'identity' must be a non-empty string" in data["result"], data
                break
    await remote.command("setLogLevel", {"level": 20}, timeout=timeout)
