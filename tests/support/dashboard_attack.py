"""The dashboard attacked from outside, as issue 29 found it: ``cscs dashboard`` and a
real CSC each in its own process on a real broker, pages that never read, and floods on
the bus (forged alarms with long reasons, invented CSCs, huge events). Shared by the
system tests (tests/test_dashboard_attacks.py) and the benchmark that prints the
figures (benchmarks/dashboard_under_attack.py).

:class:`PageReader` is a page that does read: it follows the event stream as the
browser does (snapshot, then pushes) and says when a CSC's state is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from cscs.core.protocol import encode
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress
from cscs.core.transport import Transport

__all__ = [
    "DashboardProcess",
    "PageReader",
    "alarm_flood",
    "big_events",
    "cpu_seconds",
    "csc_flood",
    "dashboard_process",
    "reading_page",
    "real_csc_process",
    "stalled_pages",
]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used (Linux, clock ticks of 10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


@dataclass
class DashboardProcess:
    url: str
    pid: int
    port: int


@contextlib.asynccontextmanager
async def dashboard_process(
    broker_url: str, prefix: str, state: Path
) -> AsyncIterator[DashboardProcess]:
    """``cscs dashboard`` on a free port of 127.0.0.1, as an operator starts it."""
    await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True)
    env = {**os.environ, "CSCS_PREFIX": prefix, "CSCS_STATE_DIR": str(state)}
    log = await asyncio.to_thread((state / "dashboard.log").open, "ab")
    with log:  # the child has its own descriptor once started
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cscs", "dashboard", "--port", "0", "--broker", broker_url,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
    drain: asyncio.Task[None] | None = None
    try:
        assert process.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(60):  # its address, after whatever it logs first
            while True:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("the dashboard did not start:\n" + "".join(lines[-5:]))
                found = re.search(r"http://127\.0\.0\.1:([0-9]+)/", line)
                if found is not None:
                    break
                lines.append(line)
        # Its output read on (a pipe left full would stop the dashboard mid-attack).
        drain = asyncio.create_task(_drain(process.stdout), name="dashboard-stdout")
        yield DashboardProcess(found.group(0), process.pid, int(found.group(1)))
    finally:
        if drain is not None:
            drain.cancel()
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _drain(output: asyncio.StreamReader) -> None:
    while await output.read(65536):
        pass


@contextlib.asynccontextmanager
async def real_csc_process(
    bus: Transport, broker_url: str, prefix: str, state: Path, index: int
) -> AsyncIterator[Remote]:
    """A real CSC (``cscs run Test``) in its own process, up in STANDBY; its remote."""
    env = {**os.environ, "CSCS_PREFIX": prefix, "CSCS_STATE_DIR": str(state)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", "run", "Test", "--index", str(index),
        "--broker", broker_url, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with Remote(bus, CscAddress("Test", index, prefix)) as remote:
            await remote.wait_for_state(State.STANDBY, timeout=60)
            yield remote
    finally:
        process.terminate()
        await process.wait()


@dataclass
class PageReader:
    """A page that reads its event stream; the latest CSC table it was pushed."""

    url: str
    cscs: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows_most: int = 0  # the most CSC rows one push carried
    frames: int = 0
    bytes: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, connected: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(self.url + "events") as response,
        ):
            response.raise_for_status()
            connected.set()
            event, data = "", ""
            parts: list[bytes] = []
            # Lines of any length (a browser reads a 1 MB frame; aiohttp's readline not).
            async for chunk in response.content.iter_any():
                self.bytes += len(chunk)
                start = 0
                while (end := chunk.find(b"\n", start)) >= 0:
                    line = b"".join([*parts, chunk[start:end]]).decode()
                    parts, start = [], end + 1
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif not line and event:
                        self.frames += 1
                        await self._take(event, data)
                        event, data = "", ""
                parts.append(chunk[start:])

    async def _take(self, event: str, data: str) -> None:
        rows = json.loads(data)["cscs"] if event == "snapshot" else None
        if event == "cscs":
            rows = json.loads(data)
        if rows is None:
            return
        self.rows_most = max(self.rows_most, len(rows))
        self.cscs = {row["csc"]: row for row in rows}
        async with self._changed:
            self._changed.notify_all()

    async def shown(self, csc: str, state: str, timeout: float) -> float:
        """Wait until ``csc`` is shown in ``state`` and alive; the seconds it took."""
        start = time.monotonic()

        def shown() -> bool:
            row = self.cscs.get(csc, {})
            return row.get("state") == state and row.get("condition") == "alive"

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(shown)
        return time.monotonic() - start


@contextlib.asynccontextmanager
async def reading_page(url: str) -> AsyncIterator[PageReader]:
    reader = PageReader(url)
    connected = asyncio.Event()
    task = asyncio.create_task(reader.run(connected), name="page-reader")
    try:
        waiting = asyncio.create_task(connected.wait())
        await asyncio.wait([waiting, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            task.result()  # the reason it could not connect
            raise RuntimeError("the page's stream ended at once")
        if not connected.is_set():
            raise TimeoutError("the page's stream did not start in 30 s")
        yield reader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await task


@contextlib.contextmanager
def stalled_pages(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` pages that ask for the event stream and never read a byte (their
    receive buffers as small as the kernel allows)."""
    pages = []
    try:
        for _ in range(count):
            page = socket.socket()
            page.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            page.connect(("127.0.0.1", port))
            page.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            pages.append(page)
        yield pages
    finally:
        for page in pages:
            page.close()


def _alarm(name: str, severity: int, reason: str) -> bytes:
    now = current_tai()
    return encode({
        "name": name, "severity": severity, "reason": reason, "maxSeverity": 4,
        "acknowledged": False, "acknowledgedBy": "", "mutedSeverity": 1, "mutedBy": "",
        "timestampSeverityNewest": now, "timestampMaxSeverity": now,
        "timestampAcknowledged": 0.0, "timestampUnmute": 0.0,
    })  # fmt: skip


async def alarm_flood(
    bus: Transport, prefix: str, alarms: int = 500, changes: int = 2000, reason: int = 2000
) -> None:
    """``changes`` forged alarm changes over ``alarms`` names, each reason ``reason``
    characters (issue 29 item 2)."""
    topic = f"{prefix}/TelemetryGateway/0/evt/alarm"
    for first in range(0, changes, 100):
        await asyncio.gather(*(
            bus.publish(topic, _alarm(f"forged.{n % alarms}", 2 + n % 3, f"{n} " + "r" * reason),
                        qos=0)
            for n in range(first, min(first + 100, changes))
        ))  # fmt: skip


async def csc_flood(bus: Transport, prefix: str, count: int = 20_000) -> None:
    """One QoS-0 heartbeat each from Camera:0..count-1 (issue 29 item 3)."""
    for first in range(0, count, 100):  # 100 at a time: as fast as the broker takes them
        beat = encode({"heartbeat": True, "seq": 1, "sent_tai": current_tai()})
        await asyncio.gather(*(
            bus.publish(f"{prefix}/Camera/{index}/evt/heartbeat", beat, qos=0)
            for index in range(first, min(first + 100, count))
        ))  # fmt: skip


async def big_events(bus: Transport, prefix: str, count: int = 10, size: int = 20 * 2**20) -> None:
    """``count`` log messages of ``size`` bytes each (issue 29 item 5)."""
    message = {"name": "x", "level": 40, "message": "m" * size, "seq": 1, "sent_tai": 0.0}
    payload = json.dumps(message).encode()
    for _ in range(count):
        await bus.publish(f"{prefix}/Archiver/1/evt/logMessage", payload, qos=0)
