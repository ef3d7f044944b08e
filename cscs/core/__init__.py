"""The CSC framework: life cycle, commands and acks, declared interfaces, configuration,
the bus (MQTT, or in memory for tests) and the commander's side.

It knows nothing of cameras, archives or any component: those are built on it. Read in
this order: :class:`BaseCsc` (``csc.py``), the declarations (``schema.py``,
``generic.py``), :func:`bind` and the ack rules (``commands.py``), :class:`Remote`
(``remote.py``), then the transports (``transport.py``, ``bus.py``).
"""

from cscs.core.auth import AuthList
from cscs.core.backoff import Backoff
from cscs.core.broker import EmbeddedBroker, find_mosquitto, free_port
from cscs.core.bus import DEFAULT_BROKER_URL, BrokerAddress, Bus
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.config import ConfigSchema
from cscs.core.csc import BaseCsc
from cscs.core.errors import ConfigurationError, ExpectedError
from cscs.core.follow import Listener, on
from cscs.core.protocol import Ack, AckCode, encode
from cscs.core.remote import (
    AckError,
    CommandTimeoutError,
    EventStream,
    Parsed,
    ParsedStream,
    Received,
    Remote,
)
from cscs.core.schema import (
    ANY_WORKING_STATE,
    ENABLED_ONLY,
    CommandSpec,
    EventSpec,
    Interface,
    NoParams,
    Payload,
    TelemetrySpec,
    parse_payload,
)
from cscs.core.settings import Settings, settings_from_env
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import DEFAULT_PREFIX, CscAddress, Kind
from cscs.core.transport import (
    BrokerUnavailableError,
    ConnectionState,
    Connector,
    Message,
    Subscription,
    Transport,
    Will,
)
from cscs.core.versions import ICD_VERSION, SOFTWARE_VERSION

__all__ = [
    "ANY_WORKING_STATE",
    "DEFAULT_BROKER_URL",
    "DEFAULT_PREFIX",
    "ENABLED_ONLY",
    "ICD_VERSION",
    "SOFTWARE_VERSION",
    "Ack",
    "AckCode",
    "AckError",
    "AuthList",
    "Backoff",
    "BaseCsc",
    "BrokerAddress",
    "BrokerUnavailableError",
    "Bus",
    "CommandBinding",
    "CommandContext",
    "CommandSpec",
    "CommandTimeoutError",
    "ConfigSchema",
    "ConfigurationError",
    "ConnectionState",
    "Connector",
    "CscAddress",
    "EmbeddedBroker",
    "EventSpec",
    "EventStream",
    "ExpectedError",
    "Interface",
    "Kind",
    "Listener",
    "Message",
    "NoParams",
    "Parsed",
    "ParsedStream",
    "Payload",
    "Received",
    "Remote",
    "Settings",
    "State",
    "Subscription",
    "TelemetrySpec",
    "Transport",
    "Will",
    "bind",
    "cancel_and_wait",
    "current_tai",
    "encode",
    "find_mosquitto",
    "free_port",
    "on",
    "parse_payload",
    "settings_from_env",
]
