"""Fuzzing over the wire (issue 20, item 3): hypothesis-made payloads for every command
of every CSC the project ships, published through Mosquitto to the running CSCs.

Each payload must get its documented answer (ICD §2), which the project's own parser
predicts (`parse_command`):

* readable (`seq` and `origin` found) but wrong: one ack, FAILED, with the reason;
* readable and valid: one final ack (the CSC is in STANDBY, so a component command is
  refused by state; a valid generic command does what it says);
* unreadable (random bytes, no object, no `seq`/`origin`, too big or too deep): no
  ack at all, only a log line.

"No ack" is shown without waiting it out: after each payload, a marker command (refused)
follows from the same client on the same topic; the CSC reads its commands in order
and refuses at once, so any ack for the payload would come before the marker's.
Afterwards every CSC still answers a command and still beats. The count of payloads per
CSC is printed (run with `-s`).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cscs import components
from cscs.core.broker import EmbeddedBroker, find_mosquitto
from cscs.core.protocol import (
    Ack,
    AckCode,
    CommandRequest,
    Refusal,
    decode_json_object,
    parse_command,
)
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.testing import CscHarness, make_csc
from cscs.core.transport import Subscription, Transport

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

INDEX = {"Weather": 0, "OCSBatch": 0, "TelemetryGateway": 0}
NAMES = components.names(components.PROJECT)
EXAMPLES = 100  # per CSC
ORIGIN = "fuzzer"
# Commands whose valid forms change a CSC's life (start a Dask cluster, leave): fuzzed
# only with an unknown parameter among the random ones, so they are always refused.
_LIFE = {"start", "enable", "disable", "standby", "exitControl", "setAuthList"}

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
_awkward_text = st.sampled_from([
    "", "\x00", "\u202eevil", "\U0001d518\U0001d52b\U0001d526", "a" * 300,
    "../../etc/passwd", "\ufeff", "e\u0301", "\ud800",  # a lone surrogate, escaped by json
])  # fmt: skip
_seq = itertools.count(1)


@st.composite
def payloads(
    draw: st.DrawFn, commands: list[str], fields: dict[str, list[str]]
) -> tuple[str, bytes]:
    """(command, payload bytes) of one of the hostile kinds."""
    command = draw(st.sampled_from(commands))
    kind = draw(st.sampled_from(["params", "params", "types", "bytes", "huge", "deep", "no-seq"]))
    if kind == "bytes":
        return command, draw(st.binary(max_size=200))
    if kind == "huge":
        head = b'{"seq": %d, "origin": "fuzzer", "pad": "' % next(_seq)  # never a repeat
        return command, head + b"x" * 2_000_000 + b'"}'
    if kind == "deep":
        depth = draw(st.integers(100, 5000))
        head = b'{"seq": %d, "origin": "fuzzer", "params": ' % next(_seq)
        return command, head + b"[" * depth + b"]" * depth + b"}"
    envelope: dict[str, Any] = {"seq": next(_seq), "origin": ORIGIN, "identity": "fuzz@test"}
    if kind == "no-seq":
        envelope.pop(draw(st.sampled_from(["seq", "origin"])))
    if kind == "types":
        key = draw(st.sampled_from(["seq", "origin", "identity", "params", "sent_tai"]))
        envelope[key] = draw(_json | _awkward_text)
    keys = st.sampled_from(fields.get(command, []) or ["x"]) | _awkward_text
    params = draw(st.dictionaries(keys, _json | _awkward_text, max_size=5))
    if command in _LIFE:
        params["fuzzUnknownParameter"] = 1
    envelope.setdefault("params", params)
    return command, json.dumps(envelope).encode()


class Acks:
    """Every ack a CSC publishes for the fuzzer's origin, in order."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription

    async def until_answered(self, waiting: set[int]) -> None:
        """Until every one of ``waiting`` has its final ack."""
        while waiting:
            ack = Ack.from_wire(decode_json_object((await self.subscription.get(10)).payload))
            if ack.origin == ORIGIN and ack.code.is_final:
                waiting.discard(ack.seq)

    async def until_marker(self, marker: int) -> list[Ack]:
        seen: list[Ack] = []
        while True:
            ack = Ack.from_wire(decode_json_object((await self.subscription.get(10)).payload))
            if (ack.origin, ack.seq) == (ORIGIN, marker):
                return seen
            seen.append(ack)


async def _send(bus: Transport, topic: str, payload: bytes) -> None:
    assert await bus.publish(topic, payload, qos=1)


@pytest.mark.parametrize("name", NAMES)
async def test_every_command_gets_its_documented_answer(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path, name: str
) -> None:
    own = Settings(prefix=f"fuzz{index}", state_dir=tmp_path)
    async with (
        make_csc(components.find(name), mosquitto, index=INDEX.get(name, 1),
                 settings=own) as harness,
        mosquitto.transport() as bus,
    ):  # fmt: skip
        sent = await _fuzz(harness, bus)
        print(f"\nwire fuzzing, {name}: {sum(sent.values())} payloads {dict(sent)}; "
              "still answering and beating")  # fmt: skip
        assert harness.csc.state is State.STANDBY
        async with harness.remote.stream("heartbeat") as beats:
            await beats.next(5)
        ack = await harness.remote.command("setLogLevel", {"level": 20})
        assert ack.code is AckCode.COMPLETE
    assert sum(sent.values()) == EXAMPLES


async def _fuzz(harness: CscHarness, bus: Transport) -> Counter[str]:
    """Send the payloads; check each one's answer; how many of each kind were sent."""
    csc = harness.csc
    interface = type(csc).interface
    commands = [c.name for c in interface.commands]
    fields = {c.name: list(c.params.model_fields) for c in interface.commands}
    cases: list[tuple[str, bytes]] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(payloads(commands, fields))
    def generate(case: tuple[str, bytes]) -> None:  # hypothesis makes them, the loop sends
        cases.append(case)

    generate()
    acks = Acks(await bus.subscribe(csc.address.ack))
    waiting: set[int] = set()  # valid commands not finally answered yet (they run on)
    used: set[int] = set()  # a seq heard again is a repeat, answered as the first was
    kinds = Counter[str]()
    try:
        for command, payload in cases:
            expected = parse_command(command, payload, interface)
            await _send(bus, csc.address.command(command), payload)
            marker = next(_seq)
            bad_marker = {"seq": marker, "origin": ORIGIN, "identity": "fuzz@test",
                          "params": {"marker": 1}}  # fmt: skip
            await _send(bus, csc.address.command("setLogLevel"), json.dumps(bad_marker).encode())
            before = await acks.until_marker(marker)
            kinds[type(expected).__name__] += 1
            earlier = [a for a in before if a.seq in waiting]
            waiting -= {a.seq for a in earlier if a.code.is_final}
            this = [(a.seq, a.code, a.result) for a in before if a not in earlier]
            seq = getattr(expected, "seq", None)
            if seq in used:
                continue
            if isinstance(expected, Refusal):
                assert this == [(expected.seq, AckCode.FAILED, expected.reason)], payload[:200]
            elif isinstance(expected, CommandRequest):
                assert all(s == expected.seq for s, _, _ in this), (this, payload[:200])
                if not any(code.is_final for _, code, _ in this):
                    waiting.add(expected.seq)
            else:  # unreadable: dropped, with a log line
                assert this == [], (this, payload[:200])
            if isinstance(seq, int):
                used.add(seq)
        await acks.until_answered(waiting)
    finally:
        bus.unsubscribe(acks.subscription)
    return kinds
