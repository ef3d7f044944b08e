"""An MQTT broker the project starts itself, so nothing need be installed.

Two backends, each run as a child process (a broker sharing a CSC's event loop and GIL
would add latency to both):

* ``mosquitto`` — when its binary is on the machine: the broker the observatory runs,
  started with ``set_tcp_nodelay true``;
* ``amqtt`` — pure Python, always available. Its limits (MQTT 3.1.1 only, unbounded
  queues for absent persistent sessions, a fixed 5 s PUBACK timeout) do not bite us:
  every client of ours speaks 3.1.1 with clean sessions and acks at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Unpack

from cscs.core.broker_address import BrokerAddress
from cscs.core.transport import TransportOptions

if TYPE_CHECKING:
    from cscs.core.bus import Bus

__all__ = ["Backend", "EmbeddedBroker", "find_mosquitto", "free_port"]

Backend = Literal["auto", "mosquitto", "amqtt"]
_READY = "CSCS-BROKER-READY"


def find_mosquitto() -> str | None:
    """The Mosquitto binary, if installed (Debian puts it in /usr/sbin)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A broker in a child process on ``host:port``; an async context manager.

    Without ``config_file`` it lets anyone in (no authentication, no ACLs): a broker for
    one machine, a demo and the tests; a site's Mosquitto is configured by
    ``cscs broker-config``, whose output ``config_file`` runs here too.

    ``stop()`` then ``start()`` again on the same port is how tests restart the broker
    under running CSCs. With ``persistence`` (Mosquitto only) the broker keeps its
    clients' sessions (subscriptions, queued QoS 1 messages) across that restart, as a
    site's broker would.
    """

    def __init__(
        self,
        backend: Backend = "auto",
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 20.0,
        persistence: bool = False,
        config_file: Path | None = None,
    ) -> None:
        mosquitto = find_mosquitto()
        if backend == "auto":
            backend = "mosquitto" if mosquitto else "amqtt"
        if backend == "mosquitto" and mosquitto is None:
            raise FileNotFoundError(
                "mosquitto is not installed (e.g. `apt-get install mosquitto`); "
                "use the amqtt backend instead"
            )
        if persistence and backend != "mosquitto":
            raise ValueError("only the mosquitto backend keeps sessions across a restart")
        if config_file is not None and (backend != "mosquitto" or port is None):
            raise ValueError("a configuration file is Mosquitto's, with the port it names")
        self.config_file = config_file
        self.backend: Literal["mosquitto", "amqtt"] = backend
        self.persistence = persistence
        self.host = host
        self.port = port or free_port(host)
        self._mosquitto = mosquitto
        self._startup_timeout = startup_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="cscs-broker-")
        self._output: asyncio.Task[None] | None = None

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.host, self.port)

    @property
    def url(self) -> str:
        return self.address.url

    def transport(self, **options: Unpack[TransportOptions]) -> Bus:
        """A client of this broker (an embedded broker is a
        :class:`~cscs.core.transport.Connector` too)."""
        return self.address.transport(**options)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _command(self) -> list[str]:
        if self.backend == "mosquitto" and self.config_file is not None:
            # A site's configuration (`cscs broker-config`), run as the user we are.
            assert self._mosquitto is not None
            config = Path(self._workdir.name) / "mosquitto.conf"
            config.write_text(
                self.config_file.read_text(encoding="utf-8")
                + f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            )
            return [self._mosquitto, "-c", str(config)]
        if self.backend == "mosquitto":
            assert self._mosquitto is not None
            config = Path(self._workdir.name) / "mosquitto.conf"
            config.write_text(
                f"listener {self.port} {self.host}\n"
                "allow_anonymous true\n"
                "set_tcp_nodelay true\n"
                # Started as root, Mosquitto would drop to the `mosquitto` user and could
                # not write its sessions into our private work directory: stay who we are.
                f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
                + (
                    f"persistence true\npersistence_location {self._workdir.name}/\n"
                    if self.persistence
                    else "persistence false\n"
                )
                + "max_queued_messages 100000\n"
                "log_dest stderr\n"
                "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            )
            return [self._mosquitto, "-c", str(config)]
        return [sys.executable, "-m", "cscs.core._amqtt_main", self.host, str(self.port)]

    async def start(self) -> EmbeddedBroker:
        if self.running:
            return self
        self._process = await asyncio.create_subprocess_exec(
            *self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal goes to us, not straight to it
        )
        seen: list[str] = []
        try:
            async with asyncio.timeout(self._startup_timeout):
                await self._wait_ready(seen)
        except (TimeoutError, RuntimeError) as exc:
            await self.stop()
            raise RuntimeError(
                f"{self.backend} broker did not start on {self.host}:{self.port}: "
                f"{str(exc) or 'no sign of life in time'}; it said: {' | '.join(seen[-5:])}"
            ) from None
        assert self._process.stdout is not None
        self._output = asyncio.create_task(
            self._drain(self._process.stdout), name=f"broker-{self.port}-output"
        )
        return self

    async def _wait_ready(self, seen: list[str]) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        while True:
            line = await self._process.stdout.readline()
            if not line:
                raise RuntimeError(f"it exited with status {await self._process.wait()}")
            text = line.decode(errors="replace").strip()
            seen.append(text)
            # Mosquitto logs "mosquitto version X running" once its listeners are open.
            if _READY in text or (" running" in text and "mosquitto version" in text):
                return

    @staticmethod
    async def _drain(output: asyncio.StreamReader) -> None:
        """Keep reading the broker's output so a full pipe never stalls it."""
        while await output.readline():
            pass

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._output is not None:
            self._output.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._output
            self._output = None

    async def kill(self) -> None:
        """Stop at once, as a crash would (SIGKILL)."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGKILL)
        await self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
        self._workdir.cleanup()
