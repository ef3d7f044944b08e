"""The operators' command line: ``cscs ocs command | status | watch``.

Thin I/O around :class:`Remote` and the pure :class:`StatusBoard`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, TextIO

from cscs.core.bus import Bus
from cscs.core.protocol import Ack, AckCode
from cscs.core.remote import AckError, CommandTimeoutError, Received, Remote
from cscs.core.topics import CscAddress
from sim.ocs.status import StatusBoard, describe

__all__ = ["parse_params", "send_command", "show_status", "watch"]


def parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value that reads as JSON (``3``, ``true``, ``"x"``) is
    taken as such, anything else as a string."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"parameter {item!r} must be written key=value, e.g. level=10")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _format_ack(ack: Ack) -> str:
    extra = f" (may take {ack.timeout:g} s more)" if ack.code is AckCode.INPROGRESS else ""
    return f"{ack.command} seq={ack.seq}: {ack.code.name} {int(ack.code)} {ack.result}{extra}"


async def send_command(
    bus: Bus,
    target: CscAddress,
    command: str,
    params: dict[str, Any],
    *,
    out: TextIO,
    timeout: float = 10.0,
    identity: str | None = None,
) -> int:
    """Send one command, print each ack as it comes; 0 only on COMPLETE."""
    async with Remote(bus, target, identity=identity) as remote:
        try:
            await remote.command(
                command,
                params,
                timeout=timeout,
                on_ack=lambda ack: print(_format_ack(ack), file=out, flush=True),
            )
        except AckError:
            return 1
        except CommandTimeoutError as exc:
            print(f"error: {exc}", file=out)
            return 2
    return 0


async def show_status(
    bus: Bus,
    prefix: str,
    *,
    out: TextIO,
    listen: float = 2.0,
    follow: bool = False,
    interval: float = 1.0,
) -> int:
    """One row per CSC seen. Once: listen for ``listen`` seconds (retained states come
    at once, heartbeats each second), then print. ``follow``: keep listening and redraw
    every ``interval`` seconds until interrupted (in place on a terminal)."""
    board = StatusBoard()
    live = follow and out.isatty()
    async with bus.subscription(f"{prefix}/+/+/evt/#", maxsize=100_000) as messages:
        loop = asyncio.get_running_loop()
        end = loop.time() + listen
        while True:
            while (remaining := end - loop.time()) > 0:
                try:
                    message = await messages.get(remaining)
                except TimeoutError:
                    break
                received = Received.from_message(message)
                if received is not None:
                    board.update(received, time.monotonic())
            table = board.render(time.monotonic())
            if not follow:
                print(table, file=out)
                return 0
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            print(("\033[H\033[J" if live else "") + f"{stamp}\n{table}\n", file=out, flush=True)
            end = loop.time() + interval


async def watch(
    bus: Bus,
    prefix: str,
    target: CscAddress | None,
    *,
    out: TextIO,
    count: int | None = None,
    telemetry: bool = False,
    heartbeats: bool = False,
) -> int:
    """Print events (and acks; telemetry with ``telemetry``) as they come."""
    root = target.root if target else f"{prefix}/+/+"
    filters = [f"{root}/evt/#", f"{root}/ack"] + ([f"{root}/tel/#"] if telemetry else [])
    subscriptions = [await bus.subscribe(f, maxsize=100_000) for f in filters]
    queue: asyncio.Queue[Received] = asyncio.Queue()

    async def pump(index: int) -> None:
        async for message in subscriptions[index]:
            received = Received.from_message(message)
            if received is not None:
                queue.put_nowait(received)

    pumps = [asyncio.create_task(pump(i), name=f"watch-{i}") for i in range(len(filters))]
    shown = 0
    try:
        while count is None or shown < count:
            received = await queue.get()
            if received.name == "heartbeat" and not heartbeats:
                continue
            print(describe(received), file=out, flush=True)
            shown += 1
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for subscription in subscriptions:
            bus.unsubscribe(subscription)
    return 0
