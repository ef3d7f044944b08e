"""From a message on ``{root}/cmd/{name}`` to a running command and its final ack.

:func:`triage` is the decision, with no I/O: drop the message (nobody to answer), refuse
it at once (an ack), or run it. :class:`CommandRunner` does what the triage says: it
sends the refusals and runs each accepted command in a task of its own, through
:func:`~cscs.core.commands.execute`, the one place outcomes become acks.
"""

from __future__ import annotations

import asyncio
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

__all__ = ["CommandRunner", "Dropped", "triage"]


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
        self._send_ack = send_ack
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
        elif isinstance(decision, Ack):
            self.spawn(self._send_ack(decision), f"answer-{decision.command}")
        else:
            self._run(decision)

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
