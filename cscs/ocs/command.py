"""``cscs ocs command``: send one command, print each ack as it comes."""

from __future__ import annotations

import json
from typing import Any, TextIO

from cscs.core.protocol import Ack, AckCode
from cscs.core.remote import AckError, CommandTimeoutError, Remote
from cscs.core.topics import CscAddress
from cscs.core.transport import Transport

__all__ = ["format_ack", "parse_params", "send_command"]


def parse_params(items: list[str], text: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``key=value`` pairs; a value that reads as JSON (``3``, ``true``, ``"x"``) is
    taken as such, anything else as a string. The keys in ``text`` (parameters the
    command declares as strings) keep their value as written: ``config={"bind": …}`` is
    the JSON text OCS Batch expects, not an object."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"parameter {item!r} must be written key=value, e.g. level=10")
        if key in text:
            params[key] = value
            continue
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def format_ack(ack: Ack) -> str:
    extra = f" (may take {ack.timeout:g} s more)" if ack.code is AckCode.INPROGRESS else ""
    return f"{ack.command} seq={ack.seq}: {ack.code.name} {int(ack.code)} {ack.result}{extra}"


async def send_command(
    bus: Transport,
    target: CscAddress,
    command: str,
    params: dict[str, Any],
    *,
    out: TextIO,
    timeout: float = 10.0,
    identity: str | None = None,
) -> int:
    """Send one command, print each ack as it comes; 0 only on COMPLETE, 1 on another
    final ack, 2 when none came."""
    async with Remote(bus, target, identity=identity) as remote:
        try:
            await remote.command(
                command,
                params,
                timeout=timeout,
                on_ack=lambda ack: print(format_ack(ack), file=out, flush=True),
            )
        except AckError:
            return 1
        except CommandTimeoutError as exc:
            print(f"error: {exc}", file=out)
            return 2
    return 0
