"""The DAQ endpoint a camera announces: where a reader on another host can connect.

ZeroMQ reports a wildcard bind (``tcp://*:N``, ``tcp://0.0.0.0:N``, ``tcp://[::]:N``) as
``0.0.0.0``/``[::]``, which no other host can connect to; ``daqAvailable`` carries the
configured advertise address (``CSCS_DAQ_ADVERTISE``) or this host's name instead.
Any other endpoint is announced as bound. Pure: the host's name is passed in.
"""

from __future__ import annotations

__all__ = ["announced_endpoint"]

_WILDCARDS = {"*", "0.0.0.0", "[::]", "::", "[::0]"}


def announced_endpoint(bound: str, advertise: str, hostname: str) -> str:
    """``bound`` (as ZeroMQ reports it) with a wildcard host replaced by ``advertise``,
    or by ``hostname`` when none is configured."""
    if not bound.startswith("tcp://"):
        return bound
    host, colon, port = bound.removeprefix("tcp://").rpartition(":")
    if not colon or host not in _WILDCARDS:
        return bound
    return f"tcp://{advertise or hostname}:{port}"
