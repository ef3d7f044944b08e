"""From a message on ``{root}/cmd/{name}`` to a running command and its final ack.

:func:`triage` is the decision, with no I/O: drop the message (nobody to answer), refuse
it at once (an ack), or run it. :class:`RecentCommands` remembers what was answered, so
that a command heard twice (a QoS 1 redelivery after a reconnect, a replay) runs once
and has one final ack (ICD §2). :class:`CommandRunner` does what they say: it sends the
refusals and runs each accepted command in a task of its own, through
:func:`~cscs.core.commands.execute`, the one place outcomes become acks.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from structlog.typing import FilteringBoundLogger

from cscs.core.auth import AuthList
from cscs.core.commands import AckSender, CommandBinding, execute
from cscs.core.protocol import (
    Ack,
    AckCode,
    CommandRequest,
    Refusal,
    Unreadable,
    parse_command,
)
from cscs.core.schema import Interface
from cscs.core.states import State
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress
from cscs.core.transport import Message, Subscription

__all__ = ["CommandRunner", "Dropped", "RecentCommands", "Repeat", "triage"]


@dataclass(frozen=True)
class Dropped:
    """A message that gets no ack: logged, with why."""

    what: str
    reason: str


def triage(
    message: Message,
    interface: Interface,
    *,
    address: CscAddress,
    state: State,
    auth: AuthList,
    own_identity: str,
) -> Dropped | Ack | CommandRequest:
    """What to do with one command message: drop it, answer it at once, or run it."""
    name = message.topic.rsplit("/", 1)[-1]
    if message.retain:
        # A retained command would run again at every reconnect: never obey one.
        return Dropped("ignored a retained command; commands must not be retained", name)
    parsed = parse_command(name, message.payload, interface)
    if isinstance(parsed, Unreadable):
        return Dropped("dropped an unreadable command", parsed.reason)
    if isinstance(parsed, Refusal):
        return Ack(parsed.seq, parsed.origin, name, AckCode.FAILED, parsed.reason, error=1)
    if not auth.permits(parsed.identity, own_identity):
        why = f"{parsed.identity} is not authorized to command {address}"
        return Ack(parsed.seq, parsed.origin, name, AckCode.NOPERM, why)
    spec = interface.command(name)
    allowed = spec.allowed_states if spec is not None else None
    if allowed is not None and state not in allowed:
        wanted = " or ".join(sorted(s.name for s in allowed))
        why = f"{name} not allowed in state {state.name} (needs {wanted})"
        return Ack(parsed.seq, parsed.origin, name, AckCode.FAILED, why, error=1)
    return parsed


@dataclass(frozen=True)
class Repeat:
    """A command heard again: ``final`` is the ack to send again (None: still running,
    send nothing more)."""

    command: str
    final: Ack | None


@dataclass
class _Answered:
    command: str
    heard: float
    final: Ack | None = None


class RecentCommands:
    """The commands heard lately, by ``(origin, seq)``, and each one's final ack once
    sent: the last ``size`` of them, none older than ``window`` seconds (a repeat after
    that is treated as new — a commander reusing a ``seq`` so much later is broken)."""

    def __init__(self, size: int = 10_000, window: float = 3600.0) -> None:
        self._size = size
        self._window = window
        self._answered: OrderedDict[tuple[str, int], _Answered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answered)

    def hear(self, origin: str, seq: int, command: str, now: float) -> Repeat | None:
        """None for a command not heard lately (now remembered); a :class:`Repeat` else."""
        self._forget(now)
        key = (origin, seq)
        answered = self._answered.get(key)
        if answered is not None:
            return Repeat(answered.command, answered.final)
        self._answered[key] = _Answered(command, now)
        while len(self._answered) > self._size:
            self._answered.popitem(last=False)
        return None

    def finished(self, ack: Ack) -> None:
        """``ack`` went out; if it is final, it is what a repeat gets."""
        answered = self._answered.get((ack.origin, ack.seq))
        if answered is not None and ack.code.is_final and answered.final is None:
            answered.final = ack

    def _forget(self, now: float) -> None:
        while self._answered:
            oldest = next(iter(self._answered.values()))
            if now - oldest.heard <= self._window:
                return
            self._answered.popitem(last=False)


class CommandRunner:
    """Receives a CSC's commands and runs them concurrently, each in its own task.

    Commands accepted only in ENABLED are tracked, so that leaving ENABLED can abort
    them (ICD §3); every task is cancelled, never abandoned, when the CSC closes.
    """

    def __init__(
        self,
        bindings: Mapping[str, CommandBinding[Any]],
        decide: Callable[[Message], Dropped | Ack | CommandRequest],
        send_ack: AckSender,
        log: FilteringBoundLogger,
    ) -> None:
        self._bindings = bindings
        self._decide = decide
        self._send = send_ack
        self.recent = RecentCommands()
        self._log = log
        self.tasks: set[asyncio.Task[None]] = set()
        self._enabled_only: set[asyncio.Task[None]] = set()

    async def read(self, commands: Subscription) -> None:
        async for message in commands:
            self.receive(message)

    def receive(self, message: Message) -> None:
        decision = self._decide(message)
        if isinstance(decision, Dropped):
            self._log.warning(decision.what, reason=decision.reason)
            return
        name = decision.command
        repeat = self.recent.hear(decision.origin, decision.seq, name, time.monotonic())
        if repeat is not None:
            self._repeated(decision.origin, decision.seq, name, repeat)
        elif isinstance(decision, Ack):
            self.spawn(self._send_ack(decision), f"answer-{decision.command}")
        else:
            self._run(decision)

    def _repeated(self, origin: str, seq: int, name: str, repeat: Repeat) -> None:
        if repeat.command != name:
            self._log.warning("dropped a command reusing the seq of another", origin=origin,
                              seq=seq, command=name, first=repeat.command)  # fmt: skip
        elif repeat.final is None:
            self._log.info("a command heard again while it runs; it runs once",
                           origin=origin, seq=seq, command=name)  # fmt: skip
        else:
            self._log.info("a command heard again after it finished; its final ack again",
                           origin=origin, seq=seq, command=name)  # fmt: skip
            final = repeat.final
            self.spawn(self._send(final), f"again-{name}")

    async def _send_ack(self, ack: Ack) -> None:
        self.recent.finished(ack)
        await self._send(ack)

    def _run(self, request: CommandRequest) -> None:
        binding = self._bindings[request.command]
        spec = binding.spec
        run = execute(request, binding, self._send_ack, self._log, spec.timeout)
        task = self.spawn(run, f"cmd-{request.command}-{request.origin}-{request.seq}")
        if spec.allowed_states is not None and spec.allowed_states <= {State.ENABLED}:
            self._enabled_only.add(task)
            task.add_done_callback(self._enabled_only.discard)

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[None]:
        async def wrapper() -> None:
            await coro

        task = asyncio.create_task(wrapper(), name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def abort_enabled_only(self, reason: str) -> None:
        """Cancel the running commands that need ENABLED (the caller's own task aside:
        a command that faults the CSC finishes itself)."""
        current = asyncio.current_task()
        for task in list(self._enabled_only):
            if task is not current:
                task.cancel(reason)

    async def wait_others(self, timeout: float) -> None:
        """Let the commands in flight (other than the caller) finish and ack."""
        pending = [t for t in self.tasks if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def close(self) -> None:
        await cancel_and_wait(list(self.tasks), self._log, "closing commands")
