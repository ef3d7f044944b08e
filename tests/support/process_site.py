"""A site with every CSC in its own process on a real broker, for system tests that
attack it from outside as a stranger on the same network would.

:func:`process_site` starts Weather:0 and, for camera ``index``, HeaderService,
Archiver and Camera (``cscs run``, as a user would), each with its log in the state
directory, all ENABLED under a topic prefix of their own. A test then talks to them
only over the broker and the DAQ socket, and checks what users rely on: the next image
archived and verified (:meth:`ProcessSite.take_image`), heartbeats throughout
(:class:`Heartbeats`), memory (:func:`rss_bytes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from cscs.archiver.interface import IMAGE_ARCHIVED, ImageArchived
from cscs.camera.events import DAQ_AVAILABLE
from cscs.core.broker import EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.remote import Received, Remote
from cscs.core.states import State
from cscs.core.topics import CscAddress
from sim.site.night import verify_archived_file
from sim.site.processes import log_path, log_tail, spawn, stop
from sim.testkit.fitsverify import fitsverify_problems

__all__ = ["Heartbeats", "ProcessSite", "process_site", "rss_bytes"]

_OVERRIDES = {"Camera": "fast"}


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for process {pid}")


@dataclass
class ProcessSite:
    broker: EmbeddedBroker
    prefix: str
    state: Path
    index: int
    pids: dict[CscAddress, int] = field(default_factory=dict)
    processes: dict[CscAddress, asyncio.subprocess.Process] = field(default_factory=dict)
    _bus: Bus | None = None

    @property
    def bus(self) -> Bus:
        """The connection of the test now running (:meth:`connected`)."""
        if self._bus is None:
            raise RuntimeError("use `async with site.connected():`")
        return self._bus

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[ProcessSite]:
        """This site with a connection of its own to the broker, for one test."""
        async with Bus(self.broker.address, connect_timeout=30) as bus:
            self._bus = bus
            try:
                yield self
            finally:
                self._bus = None

    def address(self, name: str, index: int | None = None) -> CscAddress:
        return CscAddress(name, self.index if index is None else index, self.prefix)

    @property
    def env(self) -> dict[str, str]:
        """What a tool (``cscs ocs status``) needs to see this site."""
        return {**os.environ, "CSCS_PREFIX": self.prefix, "CSCS_STATE_DIR": str(self.state)}

    def pid(self, name: str, index: int | None = None) -> int:
        return self.pids[self.address(name, index)]

    async def start(self, address: CscAddress) -> None:
        """``cscs run`` it (its log appended to), and bring it to ENABLED."""
        await self.spawn(address)
        await self.bring_up(address)

    async def spawn(self, address: CscAddress) -> None:
        process = await spawn(address, self.broker.url, self._csc_env, self.state / "logs")
        self.processes[address], self.pids[address] = process, process.pid

    async def bring_up(self, address: CscAddress) -> None:
        """From STANDBY (once it is up) to ENABLED."""
        logs = self.state / "logs"
        async with Remote(self.bus, address) as remote:
            try:
                await remote.wait_for_state(State.STANDBY, timeout=60)
            except TimeoutError:
                raise RuntimeError(
                    f"{address} did not come up:\n{log_tail(log_path(logs, address))}"
                ) from None
            override = _OVERRIDES.get(address.name, "")
            await remote.command("start", {"configurationOverride": override}, timeout=60)
            await remote.command("enable", timeout=60)

    async def kill(self, name: str, index: int | None = None) -> None:
        """SIGKILL: no clean close, no last words (the broker sends its last will)."""
        process = self.processes[self.address(name, index)]
        process.kill()
        await process.wait()

    @property
    def _csc_env(self) -> dict[str, str]:
        return {"CSCS_PREFIX": self.prefix, "CSCS_STATE_DIR": str(self.state)}

    async def daq_url(self) -> str:
        async with Remote(self.bus, self.address("Camera")) as camera:
            return (await camera.next(DAQ_AVAILABLE, timeout=30)).data.endpoint

    async def take_image(self, timeout: float = 90.0) -> ImageArchived:
        """Take a BIAS and return its file's ``imageArchived`` once the file has been
        re-read from disk and verified (FITS checksums, size, file checksum)."""
        camera = Remote(self.bus, self.address("Camera"))
        archiver = Remote(self.bus, self.address("Archiver"))
        async with camera, archiver, archiver.events(IMAGE_ARCHIVED) as archived:
            ack = await camera.command(
                "takeImages",
                {"numImages": 1, "expTime": 0.0, "shutter": False, "imageType": "BIAS"},
                timeout=timeout,
            )
            image = ack.result.split()[-1]
            event = await archived.wait_for(lambda e: e.data.imageName == image, timeout)
        problems = await asyncio.to_thread(verify_archived_file, event.data)
        assert not problems, f"{image}: {problems}"
        # Against the FITS standard too, where fitsverify is installed; a missing one
        # never skips the test this image only shows the site alive for.
        path = Path(urlparse(event.data.url).path)
        refused = await asyncio.to_thread(fitsverify_problems, [path])
        assert not refused, f"{image}: fitsverify refused it: {refused}"
        return event.data

    async def status(self) -> str:
        """``cscs ocs status`` as an operator runs it (plain table: not a terminal)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cscs", "ocs", "status", "--broker", self.broker.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=self.env,
        )  # fmt: skip
        async with asyncio.timeout(60):
            out, _ = await process.communicate()
        return out.decode()

    def log(self, name: str, index: int | None = None) -> str:
        address = self.address(name, index)
        return (self.state / "logs" / f"{address.name}-{address.index}.log").read_text(
            errors="replace"
        )


class Heartbeats:
    """Every heartbeat heard on a site, per CSC: the longest silence of each (up to now,
    so a CSC that stopped beating shows its silence growing)."""

    def __init__(self, site: ProcessSite) -> None:
        self._site = site
        self._last: dict[CscAddress, float] = {}
        self._longest: dict[CscAddress, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeats:
        subscription = await self._site.bus.subscribe(
            f"{self._site.prefix}/+/+/evt/heartbeat", qos=0, maxsize=100_000
        )
        self._subscription = subscription
        now = time.monotonic()
        self._last = {address: now for address in self._site.pids}

        async def listen() -> None:
            async for message in subscription:
                received = Received.from_message(message)
                if received is not None and received.address in self._last:
                    self._beat(received.address, time.monotonic())

        self._task = asyncio.create_task(listen(), name="heartbeats")
        return self

    def _beat(self, address: CscAddress, now: float) -> None:
        gap = now - self._last[address]
        self._longest[address] = max(self._longest.get(address, 0.0), gap)
        self._last[address] = now

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._site.bus.unsubscribe(self._subscription)

    def longest_silence(self) -> dict[str, float]:
        now = time.monotonic()
        return {
            str(address): round(max(self._longest.get(address, 0.0), now - last), 2)
            for address, last in self._last.items()
        }


@contextlib.asynccontextmanager
async def process_site(
    broker: EmbeddedBroker, state: Path, index: int = 1
) -> AsyncIterator[ProcessSite]:
    """Weather:0, HeaderService, Archiver and Camera ``index``, each ``cscs run`` in its
    own process on ``broker``, all ENABLED; every process stopped at the end."""
    prefix = f"site{uuid.uuid4().hex[:8]}"
    addresses = [CscAddress("Weather", 0, prefix)] + [
        CscAddress(name, index, prefix) for name in ("HeaderService", "Archiver", "Camera")
    ]
    (state / "logs").mkdir(parents=True, exist_ok=True)
    site = ProcessSite(broker, prefix, state, index)
    try:
        for address in addresses:  # all starting at once: the imports overlap
            await site.spawn(address)
        async with site.connected():
            for address in addresses:
                await site.bring_up(address)
        yield site
    finally:
        await stop(list(site.processes.values()))
