"""A CSC's retained list (OCS Batch's ``jobs``, the gateway's ``alarms``) read once and
shown as a table: the operators' tools show it at once, however late they look, and
treat it as what it is, something anyone on the bus could have published."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TextIO

from cscs.core.remote import Remote
from cscs.core.schema import EventSpec, Payload
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress
from cscs.core.transport import Transport

__all__ = ["show_listing"]

Table = Callable[[list[dict[str, Any]], float], str]


async def show_listing(
    bus: Transport,
    address: CscAddress,
    spec: EventSpec[Any],
    field: str,
    table: Table,
    out: TextIO,
    *,
    empty: str,
    timeout: float = 5.0,
) -> int:
    """Print ``table`` of the JSON list in ``field`` of ``address``'s retained ``spec``
    event (``empty`` if the list is); 1 if there is none, or it is not a list."""
    async with Remote(bus, address) as remote:
        try:
            event = await remote.next(spec, timeout)
        except TimeoutError:
            print(f"no {spec.name} event from {address} within {timeout:g} s: is it running?",
                  file=out)  # fmt: skip
            return 1
    data: Payload = event.data
    try:
        listing = json.loads(getattr(data, field))
    except (ValueError, TypeError, AttributeError):
        listing = None
    if not isinstance(listing, list):
        print(f"{address}'s {spec.name} event is not a list (forged?)", file=out)
        return 1
    print(table(listing, current_tai()) if listing else empty, file=out)
    return 0
