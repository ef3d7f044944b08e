"""Process settings from the environment, read in one place.

Every error names the variable, so a typo in a shell profile is found at once.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cscs.core.bus import DEFAULT_BROKER_URL, BrokerAddress
from cscs.core.topics import DEFAULT_PREFIX

__all__ = ["Settings", "default_identity", "default_state_dir", "settings_from_env"]


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


@dataclass(frozen=True)
class Settings:
    broker_url: str = DEFAULT_BROKER_URL
    prefix: str = DEFAULT_PREFIX
    config_dir: Path | None = None
    site: str | None = None
    state_dir: Path | None = None

    @property
    def broker(self) -> BrokerAddress:
        return BrokerAddress.from_url(self.broker_url)


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """``CSCS_BROKER``, ``CSCS_PREFIX``, ``CSCS_CONFIG_DIR``, ``CSCS_SITE``,
    ``CSCS_STATE_DIR``."""
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
    return Settings(
        broker_url=broker_url,
        prefix=prefix,
        config_dir=Path(config_dir) if config_dir else None,
        site=env.get("CSCS_SITE") or None,
        state_dir=Path(env["CSCS_STATE_DIR"]) if env.get("CSCS_STATE_DIR") else None,
    )
