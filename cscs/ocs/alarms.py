"""``cscs ocs alarms``: the Telemetry Gateway's alarms as a table, or followed as they
change.

The table is the retained ``alarms`` event of ``TelemetryGateway:0`` (every alarm that
is not nominal, so it shows at once however late the operator looks); ``--follow``
prints a line per ``alarm`` event until Ctrl-C. :func:`alarms_table` is pure.
"""

from __future__ import annotations

from typing import Any, TextIO

from cscs.core.remote import Remote
from cscs.core.topics import CscAddress
from cscs.core.transport import Transport
from cscs.ocs.cells import age_cell, table, text_cell
from cscs.ocs.listing import show_listing
from cscs.telemetry_gateway.interface import ALARM, ALARMS

__all__ = ["alarm_line", "alarms_table", "follow_alarms", "show_alarms"]

_SEVERITIES = {1: "NONE", 2: "WARNING", 3: "SERIOUS", 4: "CRITICAL"}


def _severity(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return "?"
    return _SEVERITIES.get(value, "?")


def _state(alarm: dict[str, Any]) -> str:
    """What a Watcher display shows: active, acknowledged, stale; and muted."""
    if alarm.get("severity") == 1:
        state = "stale"
    elif alarm.get("acknowledged") is True:
        state = f"ack'd by {text_cell(alarm.get('acknowledgedBy', ''), 20)}"
    else:
        state = "ACTIVE"
    if isinstance(alarm.get("mutedSeverity"), int) and alarm["mutedSeverity"] > 1:
        state += f", muted to {_severity(alarm['mutedSeverity'])}"
    return state


def alarms_table(listing: list[dict[str, Any]], now: float) -> str:
    """Name, severity, max severity, state, age (since the newest severity), reason."""
    rows = [
        (
            text_cell(alarm.get("name"), 64),
            _severity(alarm.get("severity")),
            _severity(alarm.get("maxSeverity")),
            _state(alarm),
            age_cell(now, alarm.get("timestampSeverityNewest")),
            text_cell(alarm.get("reason", ""), 90),
        )
        for alarm in listing
        if isinstance(alarm, dict)
    ]
    return table(("ALARM", "SEVERITY", "MAX", "STATE", "AGE", "REASON"), rows)


def alarm_line(alarm: dict[str, Any]) -> str:
    """One change, for ``--follow``."""
    return (
        f"{text_cell(alarm.get('name'), 64)} {_severity(alarm.get('severity'))} "
        f"(max {_severity(alarm.get('maxSeverity'))}, {_state(alarm)})"
        f"{': ' + text_cell(alarm['reason'], 200) if alarm.get('reason') else ''}"
    )


async def show_alarms(bus: Transport, prefix: str, out: TextIO, timeout: float = 5.0) -> int:
    """Print the alarms table; 1 if TelemetryGateway:0 has published none."""
    address = CscAddress("TelemetryGateway", 0, prefix)
    return await show_listing(bus, address, ALARMS, "alarms", alarms_table, out,
                              empty="no alarms", timeout=timeout)  # fmt: skip


async def follow_alarms(bus: Transport, prefix: str, out: TextIO) -> int:
    """Print each alarm change as it comes, until interrupted."""
    async with (
        Remote(bus, CscAddress("TelemetryGateway", 0, prefix)) as gateway,
        gateway.events(ALARM) as changes,
    ):
        print("following alarms (Ctrl-C stops)", file=out, flush=True)
        while True:
            change = await changes.next(None)
            print(alarm_line(change.data.model_dump()), file=out, flush=True)
