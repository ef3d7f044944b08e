"""What a worker process calls itself in results and logs ("done on worker …", "… (on
…)"): ``host:pid:suffix``. Host and pid alone repeat — workers in containers or PID
namespaces on one host, a pid reused by a later process — so a task's outcome could be
put down to the wrong worker; the random suffix, drawn once per process, tells them
apart."""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["worker_name"]

_named: dict[int, str] = {}  # pid -> name: a forked child is another worker


def worker_name() -> str:
    """This process's name as a worker, the same for all its tasks."""
    pid = os.getpid()
    name = _named.get(pid)
    if name is None:
        _named.clear()
        name = _named[pid] = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    return name
