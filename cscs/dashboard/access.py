"""Who may see the page and who may act through it: pure rules, tested without a server.

On the loopback address the page is the operator's own (no login, as a terminal
``cscs ocs status`` needs none). Bound anywhere else it is on a network where anyone
could open it, so it needs a token and refuses to start without one. The token comes
from a file or the environment, never the command line (``ps`` shows that).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "COOKIE",
    "TOKEN_ENV",
    "AccessError",
    "host_allowed",
    "is_loopback",
    "origin_allowed",
    "read_token",
    "require_token_off_loopback",
    "token_matches",
]

TOKEN_ENV = "CSCS_DASHBOARD_TOKEN"
COOKIE = "cscs_dashboard"
_MIN_TOKEN = 16


class AccessError(ValueError):
    """The dashboard cannot start safely as configured."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def read_token(token_file: Path | None, env: Mapping[str, str] = os.environ) -> str | None:
    """The token from ``token_file`` (first line) or ``$CSCS_DASHBOARD_TOKEN``; None if
    neither is given. A token too short to resist guessing is refused."""
    if token_file is not None:
        try:
            lines = token_file.read_text().strip().splitlines()
        except OSError as exc:
            raise AccessError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        token, where = (lines[0].strip() if lines else ""), str(token_file)
    else:
        token = env.get(TOKEN_ENV, "").strip()
        where = f"${TOKEN_ENV}"
        if not token:
            return None
    if len(token) < _MIN_TOKEN:
        raise AccessError(
            f"the token in {where} is {len(token)} characters; at least {_MIN_TOKEN} are "
            f"needed (e.g. {secrets.token_urlsafe(24)})"
        )
    return token


def require_token_off_loopback(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise AccessError(
            f"the dashboard would listen on {host}, beyond this machine, with no token: give "
            f"one with --token-file FILE or ${TOKEN_ENV} (or listen on 127.0.0.1)"
        )


def token_matches(expected: str | None, given: str | None) -> bool:
    """True when no token is required, or ``given`` is it (compared in constant time)."""
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def _host_name(host: str) -> str | None:
    """The name in a ``Host`` value (``name:port``, ``[::1]:port``), lower case; None
    if it is not one."""
    try:
        parts = urlsplit(f"//{host}")
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return None
    return parts.hostname


def host_allowed(host: str | None, names: Iterable[str] = ()) -> bool:
    """True when a request's ``Host`` names this machine's loopback (``localhost``, a
    loopback address) or one of ``names``. A page served from another site whose name
    was made to resolve to 127.0.0.1 (DNS rebinding) still sends its own name here."""
    if not host:
        return False
    name = _host_name(host)
    if name is None:
        return False
    return is_loopback(name) or name in {n.lower() for n in names}


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """True when a request has no ``Origin`` (not a browser's cross-site request) or
    its Origin is the page's own: the same host and port the request was sent to."""
    if origin is None:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or host is None:
        return False  # "null" (a sandboxed frame, a file) included
    return parts.netloc.lower() == host.lower()
