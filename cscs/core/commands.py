"""Running one command and turning its outcome into exactly one final ack.

This is the only place that maps outcomes to acknowledgements (ICD §2):

* the handler returns → ``COMPLETE`` (its string, if any, is the result);
* it raises :class:`ExpectedError` → ``FAILED`` with that message;
* it runs past the command's timeout → ``TIMEOUT``;
* it is cancelled (e.g. the CSC left ENABLED) → ``ABORTED``;
* anything else is a bug → ``FAILED`` naming the exception, traceback logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from structlog.typing import FilteringBoundLogger

from cscs.core.errors import ExpectedError
from cscs.core.protocol import Ack, AckCode, CommandRequest
from cscs.core.schema import CommandSpec, Payload

__all__ = ["AckSender", "CommandBinding", "CommandContext", "Handler", "bind", "execute"]

AckSender = Callable[[Ack], Awaitable[None]]
P = TypeVar("P", bound=Payload)


class CommandContext:
    """What a running command may do besides returning: report progress."""

    def __init__(self, request: CommandRequest, send: AckSender) -> None:
        self.request = request
        self._send = send

    async def in_progress(self, timeout: float, result: str = "") -> None:
        """Tell the commander it started and may take ``timeout`` more seconds."""
        await self._send(_answer(self.request, AckCode.INPROGRESS, result, timeout=timeout))


def _answer(
    request: CommandRequest, code: AckCode, result: str, *, timeout: float = 0.0, error: int = 0
) -> Ack:
    """An ack to ``request``: the command's ``seq``, ``origin`` and name, and ``code``."""
    return Ack(
        seq=request.seq,
        origin=request.origin,
        command=request.command,
        code=code,
        result=result,
        timeout=timeout,
        error=error,
    )


Handler = Callable[[P, CommandContext], Awaitable[str | None]]


@dataclass(frozen=True)
class CommandBinding(Generic[P]):
    """A declared command and the coroutine that does it."""

    spec: CommandSpec[P]
    handler: Handler[P]

    async def __call__(self, params: Payload, context: CommandContext) -> str | None:
        if not isinstance(params, self.spec.params):
            raise TypeError(f"{self.spec.name}: params of type {type(params).__name__}")
        return await self.handler(params, context)


def bind(spec: CommandSpec[P], handler: Handler[P]) -> CommandBinding[P]:
    """Pair a command with its handler; the type checker matches their parameters."""
    return CommandBinding(spec, handler)


async def execute(
    request: CommandRequest,
    run: Callable[[Payload, CommandContext], Awaitable[str | None]],
    send: AckSender,
    log: FilteringBoundLogger,
    timeout: float | None = None,
) -> AckCode:
    """Run a command and send its final ack; returns the final code."""
    context = CommandContext(request, send)
    name = request.command
    try:
        async with asyncio.timeout(timeout) as scope:
            result = await run(request.params, context)
    except ExpectedError as exc:
        final = _answer(request, AckCode.FAILED, str(exc) or f"{name} failed", error=1)
    except TimeoutError as exc:
        if not scope.expired():
            final = _bug(request, exc, log)
        else:
            final = _answer(request, AckCode.TIMEOUT, f"{name} took longer than {timeout:g} s")
    except asyncio.CancelledError as exc:
        reason = str(exc.args[0]) if exc.args else f"{name} was cancelled"
        with contextlib.suppress(Exception):
            await send(_answer(request, AckCode.ABORTED, reason))
        raise
    except Exception as exc:
        final = _bug(request, exc, log)
    else:
        final = _answer(request, AckCode.COMPLETE, result or "Done")
    await send(final)
    return final.code


def _bug(request: CommandRequest, exc: BaseException, log: FilteringBoundLogger) -> Ack:
    name = request.command
    log.error(f"{name} failed with an unexpected error", exc_info=exc)
    return _answer(request, AckCode.FAILED, f"{name} failed: {type(exc).__name__}: {exc}", error=2)
