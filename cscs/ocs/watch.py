"""``cscs ocs watch``: events and acks (telemetry on request) as they come, a line each."""

from __future__ import annotations

import asyncio
from typing import TextIO

from cscs.core.remote import Received
from cscs.core.topics import CscAddress, Kind
from cscs.core.transport import Transport

__all__ = ["describe", "watch"]


def describe(received: Received) -> str:
    """One human-readable line for a message."""
    fields = {k: v for k, v in received.data.items() if k not in ("seq", "sent_tai")}
    if received.name == "summaryState":
        text = str(fields.get("name", fields.get("summaryState")))
        if fields.get("lost"):
            text += " (lost: last will)"
    elif received.kind is Kind.ACK:
        data = received.data
        text = f"{data.get('command')} seq={data.get('seq')} {data.get('ack')}: "
        text += str(data.get("result", ""))
    else:
        text = " ".join(f"{k}={v!r}" for k, v in fields.items())
    kind = "ack" if received.kind is Kind.ACK else received.kind.value
    return f"{received.address} {kind} {received.name} {text}".replace("  ", " ").rstrip()


async def watch(
    bus: Transport,
    prefix: str,
    target: CscAddress | None,
    *,
    out: TextIO,
    count: int | None = None,
    telemetry: bool = False,
    heartbeats: bool = False,
) -> int:
    """Print events and acks (and telemetry with ``telemetry``) until ``count`` lines."""
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
