"""Running an observing script against the bus: each step in order, every CSC it names
followed from the start, a failing step reported with its line and what came back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from cscs.core.remote import CommandTimeoutError, Received, Remote
from cscs.core.states import State
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress, Kind
from cscs.core.transport import Subscription, Transport
from cscs.ocs.progress import Progress
from cscs.ocs.script import (
    BoundStep,
    Command,
    Say,
    Script,
    ScriptStepError,
    Wait,
    expand,
    resolve_hour_angles,
)

__all__ = ["run_script"]

_log = structlog.get_logger("script")


class _Recorder:
    """Everything one CSC publishes, from before the script's first step, so a wait
    sees what the step before it caused."""

    HISTORY = 256  # per topic: telemetry at 10 Hz is only ever looked at recently

    def __init__(self, subscriptions: list[Subscription]) -> None:
        self.latest: dict[tuple[Kind, str], Received] = {}
        self.history: dict[tuple[Kind, str], deque[tuple[float, Received]]] = {}
        self.changed = asyncio.Condition()
        self._subscriptions = subscriptions
        self._readers = [asyncio.create_task(self._read(s)) for s in subscriptions]

    @classmethod
    async def start(cls, bus: Transport, address: CscAddress) -> _Recorder:
        filters = (f"{address.root}/evt/#", f"{address.root}/tel/#")
        return cls([await bus.subscribe(f) for f in filters])

    async def _read(self, subscription: Subscription) -> None:
        async for message in subscription:
            received = Received.from_message(message)
            if received is None:
                continue
            key = (received.kind, received.name)
            self.latest[key] = received
            history = self.history.setdefault(key, deque(maxlen=self.HISTORY))
            history.append((time.monotonic(), received))
            async with self.changed:
                self.changed.notify_all()

    def find(
        self, key: tuple[Kind, str], since: float, matches: Callable[[Received], bool]
    ) -> bool:
        """Events (states included) describe how things are: the latest counts, of any
        age. Telemetry is a stream: only samples since ``since`` count. Either way a
        match since ``since`` counts, even if something newer has come."""
        latest = self.latest.get(key)
        if key[0] is Kind.EVENT and latest is not None and matches(latest):
            return True
        return any(t >= since and matches(r) for t, r in self.history.get(key, ()))

    async def close(self, bus: Transport) -> None:
        await cancel_and_wait(self._readers, _log, "stopping a script's listeners")
        for subscription in self._subscriptions:
            bus.unsubscribe(subscription)


async def run_script(
    bus: Transport,
    script: Script,
    *,
    prefix: str = "obs",
    overrides: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    lst_deg: Callable[[], float] | None = None,
) -> int:
    """Run every step in order; the number of steps run. Raises ScriptStepError.

    A wait is met by a matching message that came after the step before it began (so
    it sees what that step caused) or, for an event or a state, by the latest one."""
    steps = expand(script, overrides)
    progress = progress or Progress.silent()
    addresses = {CscAddress.parse(b.step.csc, prefix) for b in steps if not isinstance(b.step, Say)}
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(progress.done)
        remotes: dict[CscAddress, Remote] = {}
        recorders: dict[CscAddress, _Recorder] = {}
        for address in sorted(addresses):
            remotes[address] = await stack.enter_async_context(Remote(bus, address))
            recorders[address] = recorder = await _Recorder.start(bus, address)
            stack.push_async_callback(recorder.close, bus)
        previous_began = time.monotonic()
        for bound in steps:
            step = bound.step
            if isinstance(step, Say):
                progress.say(step.text)
                continue
            progress.step(bound.number, len(steps), step.describe())
            address = CscAddress.parse(step.csc, prefix)  # checked by expand()
            began = time.monotonic()
            if isinstance(step, Command):
                await _command(remotes[address], script, bound, step, lst_deg)
            else:
                await _wait(recorders[address], script, bound, step, previous_began)
            previous_began = began
    return len(steps)


def _failure(script: Script, bound: BoundStep, what: str) -> ScriptStepError:
    step = bound.step
    assert not isinstance(step, Say)
    return ScriptStepError(
        f"{script.source}: step {bound.number} (line {step.line}), {step.describe()}: {what}"
    )


async def _command(
    remote: Remote,
    script: Script,
    bound: BoundStep,
    step: Command,
    lst_deg: Callable[[], float] | None,
) -> None:
    params = dict(step.params)
    if lst_deg is not None:
        params = resolve_hour_angles(params, lst_deg())
    try:
        ack = await remote.command(step.name, params, timeout=step.timeout, check=False)
    except CommandTimeoutError as exc:
        raise _failure(script, bound, f"no answer: {exc}") from None
    if ack.code is not step.expect:
        raise _failure(
            script, bound,
            f"expected {step.expect.name}, came back {ack.code.name} {int(ack.code)}: "
            f"{ack.result or '(no result text)'}",
        )  # fmt: skip
    if step.result and step.result not in ack.result:
        raise _failure(
            script, bound,
            f"came back {ack.code.name} as expected, but its result {ack.result!r} "
            f"does not contain {step.result!r}",
        )  # fmt: skip


async def _wait(
    recorder: _Recorder, script: Script, bound: BoundStep, step: Wait, since: float
) -> None:
    if step.state is not None:
        state = int(step.state)
        key = (Kind.EVENT, "summaryState")

        def matches(received: Received) -> bool:
            return received.data.get("summaryState") == state
    else:
        key = (Kind.TELEMETRY, step.telemetry) if step.telemetry else (Kind.EVENT, step.event)

        def matches(received: Received) -> bool:
            return all(received.data.get(k) == v for k, v in step.where.items())

    try:
        async with asyncio.timeout(step.timeout), recorder.changed:
            await recorder.changed.wait_for(lambda: recorder.find(key, since, matches))
    except TimeoutError:
        last = recorder.latest.get(key)
        if last is None:
            seen = f"no {key[1]} message at all"
        elif step.state is not None:
            seen = f"its state is {_state_name(last.data.get('summaryState'))}"
        else:
            seen = f"the last {key[1]} was {_brief(last.data)}"
        raise _failure(script, bound, f"not within {step.timeout:g} s; {seen}") from None


def _state_name(code: Any) -> str:
    try:
        return State(code).name
    except ValueError:
        return repr(code)


def _brief(data: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in data.items() if k not in ("seq", "sent_tai"))
