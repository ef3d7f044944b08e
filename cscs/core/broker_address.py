"""Where an MQTT broker is and how to log in to it, from a URL: pure parsing, no MQTT.

``mqtt://user:pass@host:port``, or ``mqtts://`` for TLS. The settings, the command line
and the telemetry gateway read addresses without needing an MQTT client library; only
:meth:`BrokerAddress.transport` makes a connection, and it imports the bus to do so.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Unpack
from urllib.parse import unquote, urlsplit

from cscs.core.transport import TransportOptions

if TYPE_CHECKING:
    from cscs.core.bus import Bus

__all__ = ["DEFAULT_BROKER_URL", "BrokerAddress"]

DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and how to log in: ``mqtt://user:pass@host:port``.

    ``mqtts://`` turns on TLS (default port 8883); ``ca_file`` names the certificate
    authority to trust instead of the system's.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None

    @classmethod
    def from_url(cls, url: str, ca_file: str | None = None) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp"):
            raise ValueError(
                f"broker URL {url!r} must start with mqtt:// or mqtts://, "
                "e.g. mqtt://127.0.0.1:1883"
            )
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ValueError(f"broker URL {url!r} has a port that is not a number") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=ca_file,
        )

    @property
    def url(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def transport(self, **options: Unpack[TransportOptions]) -> Bus:
        """A :class:`~cscs.core.bus.Bus` to this broker (the
        :class:`~cscs.core.transport.Connector` of a real MQTT broker)."""
        # Imported here: reading an address must not load the MQTT client library.
        from cscs.core.bus import Bus

        return Bus(self, **options)
