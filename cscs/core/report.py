"""What every CSC says about itself (ICD §3), and when: the generic events.

At the first connection: ``summaryState``, ``softwareVersions``,
``configurationsAvailable``, ``authList``, ``logLevel``. Then ``summaryState`` at each
change, ``configurationApplied`` at each ``start``, a ``heartbeat`` every second, and
each log record at or above the CSC's level as ``logMessage``. Log records wait in a
bounded queue (the newest kept: they say what is wrong now), so a CSC that logs faster
than the bus takes never blocks on its own logging.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Protocol

from cscs.core import generic as g
from cscs.core.auth import AuthList
from cscs.core.config import AppliedConfiguration, ConfigSource, list_overrides
from cscs.core.schema import EventSpec, Payload
from cscs.core.states import State
from cscs.core.versions import ICD_VERSION

__all__ = ["SelfReport"]

_LOG_QUEUE_SIZE = 1000


class PublishEvent(Protocol):
    async def __call__(
        self, spec: EventSpec[Payload], payload: Payload, *, wait: float = 30.0
    ) -> bool: ...


class Reporting(Protocol):
    """The CSC reported on: read each time an event is published, never copied, so an
    event always says how things are when it goes out."""

    @property
    def state(self) -> State: ...

    auth: AuthList
    log_level: int


class SelfReport:
    def __init__(
        self,
        owner: Reporting,
        publish: PublishEvent,
        *,
        version: str,
        config_source: ConfigSource | None,
    ) -> None:
        self._owner = owner
        self._publish = publish
        self._version = version
        self._source = config_source
        self._url = config_source.directory.resolve().as_uri() if config_source else ""
        self._logs: asyncio.Queue[g.LogMessage] = asyncio.Queue(_LOG_QUEUE_SIZE)

    async def initial(self) -> None:
        """The generic events of a CSC that has just come up."""
        await self.summary_state()
        await self._publish(
            g.SOFTWARE_VERSIONS,
            g.SoftwareVersions(
                cscVersion=self._version, xmlVersion=ICD_VERSION,
                subsystemVersions=f"python={sys.version.split()[0]}",
            ),
        )  # fmt: skip
        overrides = ",".join(list_overrides(self._source)) if self._source else ""
        await self._publish(
            g.CONFIGURATIONS_AVAILABLE,
            g.ConfigurationsAvailable(overrides=overrides, version=self._version, url=self._url),
        )
        await self.auth_list()
        await self.log_level()

    async def summary_state(self) -> None:
        state = self._owner.state
        await self._publish(
            g.SUMMARY_STATE, g.SummaryState(summaryState=int(state), name=state.name)
        )

    async def auth_list(self) -> None:
        auth = self._owner.auth
        await self._publish(
            g.AUTH_LIST,
            g.AuthListPayload(
                authorizedUsers=auth.authorized_users_text,
                nonAuthorizedCSCs=auth.non_authorized_cscs_text,
            ),
        )

    async def log_level(self) -> None:
        await self._publish(g.LOG_LEVEL, g.LogLevel(level=self._owner.log_level))

    async def configuration_applied(self, applied: AppliedConfiguration[Any]) -> None:
        await self._publish(
            g.CONFIGURATION_APPLIED,
            g.ConfigurationApplied(
                configurations=applied.names, version=applied.version, url=self._url
            ),
        )

    def queue_log(self, record: g.LogMessage) -> None:
        """A log record to publish (the logger's sink: never blocks)."""
        if self._logs.full():
            self._logs.get_nowait()
        self._logs.put_nowait(record)

    async def publish_logs(self) -> None:
        while True:
            record = await self._logs.get()
            await self._publish(g.LOG_MESSAGE, record, wait=5.0)

    async def heartbeats(self, interval: float) -> None:
        while True:
            await self._publish(g.HEARTBEAT, g.Heartbeat(), wait=0.0)
            await asyncio.sleep(interval)
