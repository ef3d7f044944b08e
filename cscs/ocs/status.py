"""``cscs ocs status``: the state of every CSC on the bus, once or followed live.

:class:`StatusBoard` is pure data: fed with decoded events and the time they came, it
gives rows, a plain table (for pipes, logs and tests) and a ``rich`` table (for a
terminal, states in colour). :func:`show_status` is the I/O around it.

What it believes (``docs/security.md``): a retained state is only a claim until the
CSC's heartbeat confirms it — a CSC that has state but no heartbeat is shown as such,
with its state in parentheses (someone may have published it for a CSC that does not
exist); an ``errorCode`` is shown while the CSC is in FAULT, or when it is newer than the
CSC's last state change (a stale or forged one, older than a real disable/enable, is
not), and no message is taken to be newer than the moment it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cscs.core.remote import Received
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress, Kind, parse_topic
from cscs.core.transport import Message, Subscription, Transport

__all__ = ["HEARTBEAT_LOST_AFTER", "MAX_CSCS", "CscStatus", "StatusBoard", "show_status"]

# ICD §3: a monitor treats 3 s without a heartbeat as lost.
HEARTBEAT_LOST_AFTER = 3.0
# Addresses the board keeps: an observatory has tens of CSCs; anyone on the bus can
# invent thousands (one heartbeat each), and each would be a row to sort and draw.
MAX_CSCS = 256
# When the board is full, a place is taken back from among this many of the longest
# silent addresses (never from one alive now): a bounded cost per invented address.
_EVICTION_WINDOW = 32
# A CSC heard beating this often is not a one-message invention: once it stops, it keeps
# its row (shown LOST: what the night staff must see) for this long, whatever floods in.
_LONG_LIVED_HEARTBEATS = 10
_LONG_LIVED_KEPT = 600.0  # s
_TEXT = 1000  # characters kept of an error report

# The events that say a CSC has done its part for an image, and the field naming it.
_IMAGE_EVENTS = {
    "latestImage": "imageName",  # retained: what a board that starts now sees first
    "endReadout": "imageName",  # Camera: read out
    "largeFileObjectAvailable": "id",  # HeaderService: header written
    "imageArchived": "imageName",  # Archiver: a file archived
    "imageInOODS": "imageName",  # OODS: an image in the Butler repository
}


@dataclass
class CscStatus:
    address: CscAddress
    state: str = "?"
    lost: bool = False
    last_heartbeat: float | None = None
    last_error: str = ""
    latest_image: str = ""  # taken (camera), described (header service) or archived
    state_tai: float = 0.0  # when the state was sent (never later than it arrived)
    error_tai: float = 0.0  # when the error was sent (idem)
    heartbeats: int = 0  # heard since it was first seen: a long life is not a forgery's
    last_heard: float = 0.0  # monotonic: any event

    @property
    def error_shown(self) -> str:
        """The last error, if it still says something about this CSC."""
        if self.state == "FAULT" or self.error_tai > self.state_tai:
            return self.last_error
        return ""

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.last_heartbeat is None else now - self.last_heartbeat

    def condition(self, now: float) -> str:
        if self.lost:
            return "LOST (last will)"
        if self.state == "OFFLINE":
            return "exited"
        age = self.heartbeat_age(now)
        if age is None:
            return "NO HEARTBEAT (state unconfirmed)"
        return "alive" if age <= HEARTBEAT_LOST_AFTER else "LOST (no heartbeat)"

    @property
    def state_shown(self) -> str:
        """The state; in parentheses while no heartbeat has confirmed the CSC exists."""
        unconfirmed = self.last_heartbeat is None and not self.lost and self.state != "OFFLINE"
        return f"({self.state})" if unconfirmed else self.state


@dataclass
class StatusBoard:
    """Every CSC heard, at most ``max_cscs`` of them.

    Anyone may publish as any address, so the board is bounded, and a full board makes
    room only by forgetting an address that is not alive now (no heartbeat for 3 s),
    the one with the fewest heartbeats among the longest silent: a CSC alive now is
    never pushed out, and one that beat for a while and died keeps its row (LOST) for
    ten minutes however many addresses are invented meanwhile. When every place is held
    by a CSC alive now, a new address is not shown; ``refused`` and ``forgotten`` count both cases.
    """

    cscs: dict[CscAddress, CscStatus] = field(default_factory=dict)
    max_cscs: int = MAX_CSCS
    refused: int = 0  # events of an address not shown: the board was full of live CSCs
    forgotten: int = 0  # addresses dropped to make room
    _silent_first: OrderedDict[CscAddress, CscStatus] = field(default_factory=OrderedDict)

    def update(self, received: Received, now: float, tai: float | None = None) -> bool:
        """One decoded event, heard at ``now`` (monotonic) = ``tai`` (TAI, the clock of
        ``sent_tai``; default the current time). True when a row as shown changed (not
        for the heartbeat of a CSC already alive: its age moves with the clock)."""
        if received.kind is not Kind.EVENT:
            return False
        new = received.address not in self.cscs
        status = self._place(received.address, now)
        if status is None:
            return False
        before = (status.state_shown, status.condition(now), status.error_shown,
                  status.latest_image)  # fmt: skip
        data = received.data
        sent = min(received.sent_tai, current_tai() if tai is None else tai)
        if received.name == "summaryState":
            status.state_tai = sent
            code = data.get("summaryState")
            try:
                status.state = State(int(code)).name  # type: ignore[arg-type]
            except (TypeError, ValueError):
                status.state = str(code)[:40]
            status.lost = bool(data.get("lost", False))
            if status.lost:
                status.last_heartbeat = None
        elif received.name == "heartbeat":
            status.last_heartbeat = now
            status.heartbeats += 1
            status.lost = False
        elif received.name == "errorCode":
            code, report = data.get("errorCode"), data.get("errorReport", "")
            status.last_error = f"{str(code)[:40]}: {str(report)[:_TEXT]}"
            status.error_tai = sent
        elif received.name in _IMAGE_EVENTS:
            image = data.get(_IMAGE_EVENTS[received.name])
            if isinstance(image, str) and image:
                status.latest_image = image[:100]
        after = (status.state_shown, status.condition(now), status.error_shown,
                 status.latest_image)  # fmt: skip
        return new or before != after

    def _place(self, address: CscAddress, now: float) -> CscStatus | None:
        """The address's row, made if there is (or can be made) room; None if not."""
        status = self.cscs.get(address)
        if status is None:
            if len(self.cscs) >= self.max_cscs and not self._forget_one(now):
                self.refused += 1
                return None
            status = self.cscs[address] = CscStatus(address)
        self._silent_first[address] = status
        self._silent_first.move_to_end(address)
        status.last_heard = now
        return status

    def _forget_one(self, now: float) -> bool:
        candidates: list[tuple[int, int, CscAddress]] = []
        for status in itertools.islice(self._silent_first.values(), _EVICTION_WINDOW):
            beat = status.last_heartbeat
            if beat is not None and now - beat <= HEARTBEAT_LOST_AFTER and not status.lost:
                continue  # alive (or exited with a heartbeat this moment: keep it too)
            if (
                status.heartbeats >= _LONG_LIVED_HEARTBEATS
                and now - status.last_heard < _LONG_LIVED_KEPT
            ):
                continue
            candidates.append((status.heartbeats, len(candidates), status.address))
        if not candidates:
            return False
        victim = min(candidates)[2]
        del self.cscs[victim], self._silent_first[victim]
        self.forgotten += 1
        return True

    def cleared(self, message: Message) -> None:
        """An empty retained payload: the retained ``errorCode`` removed (by its CSC,
        correcting a forgery); other topics keep what they showed."""
        parsed = parse_topic(message.topic)
        if parsed is not None and parsed.name == "errorCode" and parsed.address in self.cscs:
            self.cscs[parsed.address].last_error = ""

    def rows(self, now: float) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for address in sorted(self.cscs):
            status = self.cscs[address]
            age = status.heartbeat_age(now)
            rows.append(
                (
                    str(address),
                    status.state_shown,
                    "-" if age is None else f"{age:.1f} s",
                    status.condition(now),
                    status.latest_image or "-",
                    status.error_shown or "-",
                )
            )
        return rows

    def render(self, now: float) -> str:
        """Plain columns: what a pipe, a log or a test reads."""
        rows = self.rows(now)
        if not rows:
            return "no CSC seen on the bus"
        widths = [max(len(r[i]) for r in [_HEADER, *rows]) for i in range(len(_HEADER))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [_HEADER, *rows]
        ]
        return "\n".join([*lines, *self._overflow()])

    def _overflow(self) -> list[str]:
        """What the bound left out, said (an attack on the bus is worth knowing of)."""
        if not self.refused and not self.forgotten:
            return []
        return [f"(board full at {self.max_cscs}: {self.forgotten} silent addresses "
                f"forgotten, {self.refused} events of new ones not shown)"]  # fmt: skip

    def table(self, now: float, title: str = "") -> Table:
        """The same rows for a terminal: states and conditions in colour."""
        table = Table(title=title or None, title_justify="left", header_style="bold")
        for column in _HEADER:
            table.add_column(column, no_wrap=column != "LAST ERROR")
        for row in self.rows(now):
            name, state, age, condition, image, error = row
            table.add_row(
                name, Text(state, style=_STATE_STYLES.get(state, "dim")), age,
                Text(condition, style="bold red" if condition[:4] in ("LOST", "NO H") else ""),
                image, Text(error, style="red" if error != "-" else "dim"),
            )  # fmt: skip
        if not self.cscs:
            table.caption = "no CSC seen on the bus"
        elif overflow := self._overflow():
            table.caption = overflow[0]
        return table


_HEADER = ("CSC", "STATE", "HEARTBEAT", "CONDITION", "LATEST IMAGE", "LAST ERROR")
_STATE_STYLES = {
    "ENABLED": "green",
    "DISABLED": "yellow",
    "STANDBY": "cyan",
    "FAULT": "bold red",
    "OFFLINE": "dim",
}


async def _listen(messages: Subscription, board: StatusBoard, seconds: float) -> None:
    """Feed the board with what comes for ``seconds``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (remaining := end - loop.time()) > 0:
        try:
            message = await messages.get(remaining)
        except TimeoutError:
            return
        if not message.payload:
            board.cleared(message)
            continue
        received = Received.from_message(message)
        if received is not None:
            with contextlib.suppress(ValueError):  # a seq or time that is not one: not shown
                board.update(received, time.monotonic())


async def show_status(
    bus: Transport,
    prefix: str,
    *,
    out: TextIO,
    listen: float = 2.0,
    follow: bool = False,
    interval: float = 1.0,
) -> int:
    """One row per CSC seen. Once: listen for ``listen`` seconds (retained states come
    at once, heartbeats each second), then print. ``follow``: keep listening and redraw
    every ``interval`` seconds until interrupted: in place on a terminal, as successive
    plain tables otherwise."""
    board = StatusBoard()
    console = Console(file=out)
    async with bus.subscription(f"{prefix}/+/+/evt/#", maxsize=100_000) as messages:
        await _listen(messages, board, listen)
        if not follow:
            if console.is_terminal:
                console.print(board.table(time.monotonic()))
            else:
                print(board.render(time.monotonic()), file=out, flush=True)
            return 0
        if not console.is_terminal:
            while True:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                print(f"{stamp}\n{board.render(time.monotonic())}\n", file=out, flush=True)
                await _listen(messages, board, interval)
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                title = time.strftime("%Y-%m-%d %H:%M:%S") + f"  ({prefix}/…, Ctrl-C to stop)"
                live.update(board.table(time.monotonic(), title), refresh=True)
                await _listen(messages, board, interval)
