"""A site's Mosquitto locked down by role (ICD 1.1 §4 "Roles"): users, hashed passwords,
per-role ACLs and TLS, generated from one short YAML file by ``cscs broker-config``.

Roles:

* ``csc``: publishes only under its own roots (``{prefix}/{Name}/{index}/evt|tel|ack``,
  and whatever extra patterns the file gives, e.g. OCS Batch's ``dm/#``), reads all;
* ``operator``: publishes commands (``{prefix}/+/+/cmd/#``), reads all;
* ``monitor``: reads all, publishes nothing (a dashboard without ``--allow-commands``).

Passwords are made here (32 random bytes, URL-safe), written one per user into
``credentials/{user}`` (mode 0600) for the process that logs in as that user
(``CSCS_BROKER_PASSWORD_FILE``), and kept across runs so that adding a user does not
change the others'. Mosquitto gets only their PBKDF2-SHA512 hashes (its ``$7$`` format,
what ``mosquitto_passwd`` writes). Pure except :func:`write_broker_config`.

Every name, CSC and pattern written into ``passwd`` or ``acl`` is checked against an
allow-list of characters where the YAML is read, and again as each line is made: Mosquitto
reads those files line by line, so a line break, a carriage return, a NUL or a space in a
pattern would add lines of the attacker's choosing (``dm/qc\nuser night\ntopic write
…/evt/daqAvailable`` gave the operator ``night`` the camera's ``daqAvailable``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cscs.core.topics import CscAddress, check_filter

__all__ = ["BrokerUsers", "User", "acl_text", "password_hash", "write_broker_config"]

_ITERATIONS = 101  # mosquitto_passwd's own for $7$

# Allow-lists, each matched whole (fullmatch: a regex's "$" also matches before a final
# newline). What a site needs, nothing that can break a line of Mosquitto's files.
_PLAIN = {
    "user name": re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
    "prefix": re.compile(r"[A-Za-z0-9_-]{1,32}"),
    "CSC": re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}(:[0-9]{1,9})?"),
    "publish pattern": re.compile(r"[A-Za-z0-9_.:@=+#/-]{1,256}"),
    "listener host": re.compile(r"[A-Za-z0-9_.:-]{1,253}"),
}
_ALLOWED = {
    "user name": "a letter or digit, then up to 63 letters, digits, _ . -",
    "prefix": "1-32 letters, digits, _ -",
    "CSC": "NAME or NAME:INDEX (letters, digits, _; an integer index)",
    "publish pattern": "1-256 letters, digits, / _ . : @ = - and the wildcards + #",
    "listener host": "a host name or an IP address",
}


def _plain(what: str, value: str) -> str:
    """``value`` if it is plainly a valid ``what``; else ValueError saying which
    character is refused (a control character, a line break, a space…) and what is allowed."""
    if _PLAIN[what].fullmatch(value):
        return value
    odd = next((c for c in value if not (c.isascii() and (c.isalnum() or c in "_.:@=+#/-"))), None)
    cause = f"character {odd!r} is not allowed" if odd is not None else "not of the allowed form"
    if odd is not None and (not odd.isprintable() or odd.isspace()):
        cause += " (a line break, control character or space would add lines to the ACL file)"
    raise ValueError(f"{what} {value[:80]!r}: {cause}; allowed: {_ALLOWED[what]}")


class User(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: Literal["csc", "operator", "monitor"]
    cscs: list[str] = []
    """For a `csc` user: the CSCs it runs, `Name:index` (e.g. `Archiver:1`)."""
    publish: list[str] = []
    """More topic filters a `csc` user may publish on (e.g. OCS Batch's `dm/#`)."""

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return _plain("user name", name)

    @field_validator("cscs")
    @classmethod
    def _cscs(cls, cscs: list[str]) -> list[str]:
        for csc in cscs:
            CscAddress.parse(_plain("CSC", csc))
        return cscs

    @field_validator("publish")
    @classmethod
    def _filters(cls, filters: list[str]) -> list[str]:
        for topic_filter in filters:
            check_filter(_plain("publish pattern", topic_filter))
            if topic_filter.startswith(("#", "+")):
                raise ValueError(f"{topic_filter!r} would let the user publish anywhere")
        return filters


class BrokerUsers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = "lsst"
    users: list[User] = Field(min_length=1)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        return _plain("prefix", prefix)

    @field_validator("users")
    @classmethod
    def _unique(cls, users: list[User]) -> list[User]:
        names = [u.name for u in users]
        if len(set(names)) != len(names):
            raise ValueError("user names must be unique")
        for user in users:
            if user.role == "csc" and not user.cscs:
                raise ValueError(f"user {user.name}: a csc user names its CSCs (cscs: [...])")
            if user.role != "csc" and (user.cscs or user.publish):
                raise ValueError(f"user {user.name}: only a csc user has cscs or publish")
        return users

    @classmethod
    def load(cls, path: Path) -> BrokerUsers:
        """ValueError naming the file and the problem."""
        try:
            return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"{path}: {exc}") from None


def password_hash(password: str, salt: bytes | None = None) -> str:
    """Mosquitto's ``$7$`` hash: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    encode = base64.b64encode
    return f"$7${_ITERATIONS}${encode(salt).decode()}${encode(digest).decode()}"


def acl_text(config: BrokerUsers) -> str:
    """Mosquitto's ACL file: for each user, what it may write and read."""
    lines = ["# Made by `cscs broker-config`; roles as in ICD 1.1 §4.", ""]
    prefix = _plain("prefix", config.prefix)  # again: a config built without validation
    for user in config.users:
        lines.append(f"user {_plain('user name', user.name)}")
        if user.role == "csc":
            for csc in user.cscs:
                address = CscAddress.parse(_plain("CSC", csc), prefix)
                root = f"{prefix}/{address.name}/{address.index}"
                lines += [f"topic write {root}/{kind}/#" for kind in ("evt", "tel", "ack")]
            lines += [f"topic write {_plain('publish pattern', p)}" for p in user.publish]
        elif user.role == "operator":
            lines.append(f"topic write {config.prefix}/+/+/cmd/#")
        lines += ["topic read #", ""]
    return "\n".join(lines)


def _conf_text(directory: Path, host: str, port: int, tls: Sequence[Path]) -> str:
    lines = [
        "# Made by `cscs broker-config`: every client logs in; ACLs by role.",
        "per_listener_settings false",
        f"listener {port} {host}",
    ]
    if tls:
        ca, cert, key = tls
        lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2"]
    lines += [
        "allow_anonymous false",
        f"password_file {directory / 'passwd'}",
        f"acl_file {directory / 'acl'}",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error", "log_type warning", "log_type notice", "log_type information",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _password_of(credentials: Path, user: str) -> str:
    """The user's password: the one made before, or a new one (file mode 0600)."""
    path = credentials / user
    if path.exists():
        password = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
        if re.fullmatch(r"[A-Za-z0-9_-]{16,}", password):
            return password
    password = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(password + "\n")
    return password


def write_broker_config(
    config: BrokerUsers,
    directory: Path,
    *,
    host: str = "0.0.0.0",
    port: int = 1883,
    tls: Sequence[Path] = (),
) -> Path:
    """Write ``mosquitto.conf``, ``passwd``, ``acl`` and ``credentials/`` into
    ``directory``; the configuration's path. ``tls``: (CA, certificate, key) files."""
    if tls and len(tls) != 3:
        raise ValueError("TLS needs the CA, the server certificate and its key")
    _plain("listener host", host)
    # A line of mosquitto.conf each (the directory's in two): no character that ends a line.
    for what, path in [("output directory", directory), *(("TLS file", p) for p in tls)]:
        if not str(path).isprintable():
            raise ValueError(f"{what} {str(path)[:80]!r}: a control character in the path")
    acl = acl_text(config)  # checks every name again before anything is written
    directory = directory.resolve()
    credentials = directory / "credentials"
    credentials.mkdir(parents=True, exist_ok=True, mode=0o700)
    passwd = [f"{u.name}:{password_hash(_password_of(credentials, u.name))}" for u in config.users]
    _write_private(directory / "passwd", "\n".join(passwd) + "\n")
    _write_private(directory / "acl", acl)
    conf = directory / "mosquitto.conf"
    conf.write_text(_conf_text(directory, host, port, [p.resolve() for p in tls]), encoding="utf-8")
    return conf


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
