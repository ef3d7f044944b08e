"""A PostgreSQL server of the tests' own: a fresh cluster in a temporary directory, on a
private port and socket, stopped and removed at the end.

The catalog's production database is PostgreSQL, so its tests run there as well as on
SQLite; but never on a server the machine happens to run (a user's machine has none, and
a shared one is not the tests' to fill). The server's programs come from the system's
PostgreSQL (Debian's ``postgresql`` package: ``/usr/lib/postgresql/N/bin``); without
them the tests that need one are skipped, saying so. ``CSCS_TEST_POSTGRES`` (an
SQLAlchemy URL of an administrative database) points them at another server instead.

PostgreSQL refuses to run as root: under root the cluster belongs to, and the server
runs as, the ``postgres`` user (or ``nobody``) through ``runuser``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresMissingError", "find_postgres_bin", "private_postgres"]

_START_TIMEOUT = 60  # s: pg_ctl's own wait, on a loaded machine


class PostgresMissingError(RuntimeError):
    """No PostgreSQL server programs here: the reason a test is skipped."""


def find_postgres_bin() -> Path | None:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``: on the PATH, or the
    newest of Debian's versioned directories (which are not on it)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _unprivileged_user() -> str | None:
    """Under root, whom the cluster belongs to; otherwise None (the tests' own user)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresMissingError("running as root with neither a postgres nor a nobody user")


@contextlib.contextmanager
def private_postgres() -> Iterator[str]:
    """Start a server; yield the SQLAlchemy URL of its ``postgres`` database (trust
    authentication, TCP on 127.0.0.1 at a free port); stop it and remove its files."""
    programs = find_postgres_bin()
    if programs is None:
        raise PostgresMissingError(
            "no PostgreSQL server programs (initdb, pg_ctl): install Debian's postgresql "
            "package, or set CSCS_TEST_POSTGRES to a server's URL"
        )
    user = _unprivileged_user()
    as_user = ["runuser", "-u", user, "--"] if user else []
    root = Path(tempfile.mkdtemp(prefix="cscs-pg-"))
    data, log = root / "data", root / "server.log"
    port = _free_port()
    try:
        if user:
            account = pwd.getpwnam(user)
            os.chown(root, account.pw_uid, account.pw_gid)
        _run([*as_user, str(programs / "initdb"), "-D", str(data), "-U", "postgres",
              "--auth=trust", "-E", "UTF8", "--no-sync"])  # fmt: skip
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -F"
        _run([*as_user, str(programs / "pg_ctl"), "-D", str(data), "-l", str(log),
              "-o", options, "-w", "-t", str(_START_TIMEOUT), "start"])  # fmt: skip
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run([*as_user, str(programs / "pg_ctl"), "-D", str(data), "-m", "immediate",
                  "-w", "stop"])  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(command: list[str]) -> None:
    """Run a PostgreSQL program; its own output, whole, in the error if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
