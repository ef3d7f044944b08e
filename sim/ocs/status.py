"""What night staff see: the state of every CSC on the bus, as pure data.

Fed with decoded events (and the time they came), it renders a table. No I/O here,
so the board is tested without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cscs.core.remote import Received
from cscs.core.states import State
from cscs.core.topics import CscAddress, Kind

__all__ = ["HEARTBEAT_LOST_AFTER", "CscStatus", "StatusBoard", "describe"]

# ICD §3: a monitor treats 3 s without a heartbeat as lost.
HEARTBEAT_LOST_AFTER = 3.0

# The events that say a CSC has done its part for an image, and the field naming it.
_IMAGE_EVENTS = {
    "latestImage": "imageName",  # retained: what a board that starts now sees first
    "endReadout": "imageName",  # Camera: read out
    "largeFileObjectAvailable": "id",  # HeaderService: header written
    "imageArchived": "imageName",  # Archiver: a file archived
}


@dataclass
class CscStatus:
    address: CscAddress
    state: str = "?"
    lost: bool = False
    last_heartbeat: float | None = None
    last_error: str = ""
    latest_image: str = ""  # taken (camera), described (header service) or archived

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.last_heartbeat is None else now - self.last_heartbeat

    def condition(self, now: float) -> str:
        if self.lost:
            return "LOST (last will)"
        if self.state == "OFFLINE":
            return "exited"
        age = self.heartbeat_age(now)
        if age is None:
            return "no heartbeat yet"
        return "alive" if age <= HEARTBEAT_LOST_AFTER else "LOST (no heartbeat)"


@dataclass
class StatusBoard:
    cscs: dict[CscAddress, CscStatus] = field(default_factory=dict)

    def update(self, received: Received, now: float) -> None:
        if received.kind is not Kind.EVENT:
            return
        status = self.cscs.setdefault(received.address, CscStatus(received.address))
        data = received.data
        if received.name == "summaryState":
            code = data.get("summaryState")
            try:
                status.state = State(int(code)).name  # type: ignore[arg-type]
            except (TypeError, ValueError):
                status.state = str(code)
            status.lost = bool(data.get("lost", False))
            if status.lost:
                status.last_heartbeat = None
        elif received.name == "heartbeat":
            status.last_heartbeat = now
            status.lost = False
        elif received.name == "errorCode":
            status.last_error = f"{data.get('errorCode')}: {data.get('errorReport', '')}"
        elif received.name in _IMAGE_EVENTS:
            image = data.get(_IMAGE_EVENTS[received.name])
            if isinstance(image, str) and image:
                status.latest_image = image

    def rows(self, now: float) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for address in sorted(self.cscs):
            status = self.cscs[address]
            age = status.heartbeat_age(now)
            rows.append(
                (
                    str(address),
                    status.state,
                    "-" if age is None else f"{age:.1f} s",
                    status.condition(now),
                    status.latest_image or "-",
                    status.last_error or "-",
                )
            )
        return rows

    def render(self, now: float) -> str:
        header = ("CSC", "STATE", "HEARTBEAT", "CONDITION", "LATEST IMAGE", "LAST ERROR")
        rows = self.rows(now)
        if not rows:
            return "no CSC seen on the bus"
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]
        )


def describe(received: Received) -> str:
    """One human-readable line for ``cscs ocs watch``."""
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
