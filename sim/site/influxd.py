"""An InfluxDB 1.x server of our own, for the soak (``cscs soak --efd influxdb``) and
the tests: ``influxd`` with a configuration written here, on a free private port (never
the machine's 8086), its metadata, data and WAL under a given directory (the soak's
state directory) or a temporary one, reporting off; stopped at the end.

The EFD's real store is InfluxDB 1.x (Debian's ``influxdb`` package); without
``influxd`` the tests that need one are skipped, and the soak refuses ``--efd influxdb``,
each saying so. :meth:`InfluxServer.restart` (or :meth:`~InfluxServer.stop`, then
:meth:`~InfluxServer.start`) brings it back on the same port and data: "InfluxDB
restarted mid-night", for the writer's tests and the soak's ``influx-restart`` fault.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ["InfluxMissingError", "InfluxServer", "find_influxd", "private_influx"]

_START_TIMEOUT = 30.0  # s: influxd answers /ping in about a second; a loaded machine
_STOP_TIMEOUT = 15.0


class InfluxMissingError(RuntimeError):
    """No ``influxd`` here: the reason a test is skipped, or the soak refuses."""


def find_influxd() -> Path | None:
    """Debian's ``influxd`` (``/usr/bin``), or one on the PATH."""
    found = shutil.which("influxd")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(root: Path, port: int, max_body_size: int | None = None) -> str:
    # The RPC service (8088 by default) is bound to a free port too, so two servers (two
    # test sessions on one machine) never collide, and nothing listens beyond loopback.
    return f"""\
reporting-disabled = true
bind-address = "127.0.0.1:{_free_port()}"

[meta]
  dir = "{root / "meta"}"

[data]
  dir = "{root / "data"}"
  wal-dir = "{root / "wal"}"
  query-log-enabled = false
  trace-logging-enabled = false

[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
{"" if max_body_size is None else f"  max-body-size = {int(max_body_size)}"}

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false
"""


class InfluxServer:
    """One ``influxd``: :attr:`host`, :attr:`port`, :meth:`url` of a database on it."""

    def __init__(self, influxd: Path, root: Path, *, max_body_size: int | None = None) -> None:
        self.influxd = influxd
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.config = root / "influxdb.conf"
        # max_body_size: a small one lets a test provoke the 413 a large batch gets.
        self.config.write_text(_config(root, self.port, max_body_size))
        self.log = root / "influxd.log"
        self._process: subprocess.Popen[bytes] | None = None
        # start and stop run in threads (the soak's): a stop asked for while a start is
        # under way (the soak interrupted mid-restart) waits for it, and then stops what
        # it started, rather than leave an influxd behind.
        self._lock = threading.RLock()

    def url(self, database: str) -> str:
        """The ``CSCS_EFD`` URL of ``database`` on this server."""
        return f"influxdb://{self.host}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start ``influxd`` and return once it answers ``/ping`` (204)."""
        with self._lock:
            self._start()

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL), keeping its data."""
        with self._lock:
            self._stop()

    def _start(self) -> None:
        if self.running:
            return
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.influxd), "-config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"influxd exited ({self._process.returncode}): {self._tail()}")
            if self._pings():
                return
            time.sleep(0.05)  # polling a process we do not control: no event to wait on
        self._stop()
        raise RuntimeError(f"influxd did not answer /ping in {_START_TIMEOUT:.0f} s")

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port and data (InfluxDB restarted mid-night)."""
        self.stop()
        self.start()

    def _pings(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/ping", timeout=1) as r:
                return int(r.status) == 204
        except (urllib.error.URLError, OSError):
            return False

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""


@contextlib.contextmanager
def private_influx(
    root: Path | None = None, *, max_body_size: int | None = None
) -> Iterator[InfluxServer]:
    """A started server of our own, stopped afterwards. Its files are under ``root``
    (kept: the soak's state directory) or, without one, a temporary directory removed
    at the end (the tests)."""
    influxd = find_influxd()
    if influxd is None:
        raise InfluxMissingError(
            "influxd is not installed (apt-get install influxdb); .ci/run installs it"
        )
    temporary = root is None
    where = Path(tempfile.mkdtemp(prefix="cscs-influx-")) if root is None else root
    server = InfluxServer(influxd, where, max_body_size=max_body_size)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if temporary:
            shutil.rmtree(where, ignore_errors=True)
