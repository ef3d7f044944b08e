"""Process settings from the environment, read in one place (:func:`settings_from_env`).

Every error names the variable, so a typo in a shell profile is found at once. Nothing
else in the project reads the environment; a CSC gets these as a :class:`Settings`.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from cscs.core.broker_address import DEFAULT_BROKER_URL, BrokerAddress
from cscs.core.topics import DEFAULT_PREFIX

__all__ = [
    "DEFAULT_DAQ_BIND",
    "Settings",
    "default_identity",
    "default_state_dir",
    "read_password_file",
    "settings_from_env",
    "with_credentials",
]


def default_state_dir() -> Path:
    """Where CSCs keep what must survive a restart (e.g. image sequence numbers)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "cscs"


def default_identity() -> str:
    """``user@host`` of this process: the identity of commands it sends (ICD §2)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


DEFAULT_DAQ_BIND = "tcp://127.0.0.1:*"
# A host name, an IPv4 address, or an IPv6 address in brackets: what goes in tcp://HOST:N.
_ADVERTISED_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\]")


@dataclass(frozen=True)
class Settings:
    """What a process takes from its environment; the defaults when a variable is unset."""

    broker_url: str = DEFAULT_BROKER_URL
    """``CSCS_BROKER``: the MQTT broker."""
    prefix: str = DEFAULT_PREFIX
    """``CSCS_PREFIX``: the first level of every topic."""
    config_dir: Path | None = None
    """``CSCS_CONFIG_DIR``: configuration directories by CSC name, instead of the shipped."""
    site: str | None = None
    """``CSCS_SITE``: the site layer of configuration (``_{site}.yaml``)."""
    state_dir: Path | None = None
    """``CSCS_STATE_DIR``: what must survive a restart (default ``~/.local/state/cscs``)."""
    daq_bind: str = DEFAULT_DAQ_BIND
    """``CSCS_DAQ_BIND``: where a (simulated) camera's DAQ server listens."""
    daq_advertise: str = ""
    """``CSCS_DAQ_ADVERTISE``: the host name or address announced in ``daqAvailable``
    for a wildcard bind (``tcp://*:N``, ``tcp://0.0.0.0:N``); default: this host's name."""
    broker_username: str | None = None
    """``CSCS_BROKER_USERNAME``: the broker user (over the URL's)."""
    broker_password: str | None = field(default=None, repr=False)
    """``CSCS_BROKER_PASSWORD``, or the first line of ``CSCS_BROKER_PASSWORD_FILE``."""
    broker_ca: str | None = None
    """``CSCS_BROKER_CA``: the certificate authority an ``mqtts://`` broker is checked
    against (default: the system's)."""
    efd_url: str = ""
    """``CSCS_EFD``: the EFD store, ``sqlite:///ABSOLUTE/PATH`` or
    ``influxdb://HOST:PORT/DATABASE``; empty: the embedded file under the state
    directory (:attr:`efd`)."""

    @property
    def broker(self) -> BrokerAddress:
        return with_credentials(
            BrokerAddress.from_url(self.broker_url), self.broker_username,
            self.broker_password, self.broker_ca,
        )  # fmt: skip

    @property
    def state_directory(self) -> Path:
        return self.state_dir or default_state_dir()

    @property
    def efd(self) -> str:
        """Where the EFD is: ``CSCS_EFD``, or the embedded store under the state
        directory, which every process of one site shares."""
        return self.efd_url or f"sqlite:///{self.state_directory / 'efd' / 'efd.sqlite3'}"


def with_credentials(
    address: BrokerAddress, username: str | None, password: str | None, ca_file: str | None
) -> BrokerAddress:
    """``address`` with whichever of these are given in place of its own."""
    return replace(
        address,
        username=username if username is not None else address.username,
        password=password if password is not None else address.password,
        ca_file=ca_file if ca_file is not None else address.ca_file,
    )


def read_password_file(path: str, what: str) -> str:
    """The first line of a password file; ValueError naming ``what`` (the variable or
    option) when it cannot be read or is empty."""
    try:
        with open(path, encoding="utf-8") as file:
            password = file.readline(4096).rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}={path!r}: cannot read the password: {exc}") from None
    if not password:
        raise ValueError(f"{what}={path!r}: the file's first line is empty")
    return password


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """``CSCS_BROKER``, ``CSCS_PREFIX``, ``CSCS_CONFIG_DIR``, ``CSCS_SITE``,
    ``CSCS_STATE_DIR``, ``CSCS_DAQ_BIND``, ``CSCS_DAQ_ADVERTISE``, ``CSCS_EFD``, and the
    broker's credentials (``CSCS_BROKER_USERNAME``, ``CSCS_BROKER_PASSWORD`` or
    ``CSCS_BROKER_PASSWORD_FILE``, ``CSCS_BROKER_CA``: never on a command line, where
    ``ps`` shows them); ValueError naming the variable that is wrong."""
    env = os.environ if env is None else env
    broker_url = env.get("CSCS_BROKER", DEFAULT_BROKER_URL)
    try:
        BrokerAddress.from_url(broker_url)
    except ValueError as exc:
        raise ValueError(f"CSCS_BROKER: {exc}") from None
    prefix = env.get("CSCS_PREFIX", DEFAULT_PREFIX)
    if not prefix or any(c in prefix for c in "#+") or prefix.startswith("/"):
        raise ValueError(f"CSCS_PREFIX={prefix!r}: must be a plain MQTT topic level, e.g. obs")
    config_dir = env.get("CSCS_CONFIG_DIR")
    if config_dir is not None and not Path(config_dir).is_dir():
        raise ValueError(f"CSCS_CONFIG_DIR={config_dir!r}: no such directory")
    daq_bind = env.get("CSCS_DAQ_BIND") or DEFAULT_DAQ_BIND
    if not daq_bind.startswith(("tcp://", "ipc://")):
        raise ValueError(
            f"CSCS_DAQ_BIND={daq_bind!r}: must be a ZeroMQ endpoint, e.g. tcp://127.0.0.1:5555"
        )
    daq_advertise = env.get("CSCS_DAQ_ADVERTISE", "")
    if daq_advertise and not _ADVERTISED_HOST.fullmatch(daq_advertise):
        raise ValueError(
            f"CSCS_DAQ_ADVERTISE={daq_advertise!r}: must be a host name or address, "
            "e.g. camera-daq.example.org or 10.0.0.5 ([::1] for IPv6)"
        )
    password = env.get("CSCS_BROKER_PASSWORD")
    password_file = env.get("CSCS_BROKER_PASSWORD_FILE")
    if password is not None and password_file:
        raise ValueError("CSCS_BROKER_PASSWORD and CSCS_BROKER_PASSWORD_FILE are both set: "
                         "keep one")  # fmt: skip
    if password_file:
        password = read_password_file(password_file, "CSCS_BROKER_PASSWORD_FILE")
    efd_url = env.get("CSCS_EFD", "")
    if efd_url and not re.fullmatch(r"sqlite:////\S+|influxdb://[^/\s]+/\w+", efd_url):
        raise ValueError(
            f"CSCS_EFD={efd_url[:200]!r}: must be sqlite:////absolute/path/efd.sqlite3 or "
            "influxdb://HOST:PORT/DATABASE"
        )
    ca = env.get("CSCS_BROKER_CA") or None
    if ca is not None and not Path(ca).is_file():
        raise ValueError(f"CSCS_BROKER_CA={ca!r}: no such file")
    return Settings(
        broker_url=broker_url,
        prefix=prefix,
        config_dir=Path(config_dir) if config_dir else None,
        site=env.get("CSCS_SITE") or None,
        state_dir=Path(env["CSCS_STATE_DIR"]) if env.get("CSCS_STATE_DIR") else None,
        daq_bind=daq_bind,
        daq_advertise=daq_advertise,
        broker_username=env.get("CSCS_BROKER_USERNAME") or None,
        broker_password=password,
        broker_ca=ca,
        efd_url=efd_url,
    )
