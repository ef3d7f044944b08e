"""What the gateway hears of DM's CSCs for the health rules (:mod:`.health`): each watched
CSC's ``summaryState`` and ``heartbeat``, each watched archiver's ``imageArchived`` and
``imageRetrievalFailed``; and, once a second while ENABLED, the rules' verdicts applied
to the alarms. Payloads are checked where they are parsed: a forged or broken one is
dropped (logged by the framework), never a crash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pydantic import Field
from structlog.typing import FilteringBoundLogger

from cscs.camera.naming import ImageNameText, taken_by
from cscs.camera.observatory import sun_altitude
from cscs.core import generic as g
from cscs.core.follow import Followers
from cscs.core.remote import Parsed, Received
from cscs.core.schema import Payload, parse_payload
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress
from cscs.core.transport import Transport
from cscs.telemetry_gateway.alarms import Alarm, Alarms
from cscs.telemetry_gateway.health import DmHealth, HealthConfig

__all__ = ["Announce", "HealthWatch"]

#: Tell the OCS side of alarms that changed (each an ``alarm`` event, then the list).
Announce = Callable[[Sequence[Alarm]], Awaitable[None]]

E = TypeVar("E", bound=Payload)
_NIGHT_SUN = -12.0  # deg: nautical twilight over
_SUN_EVERY = 60.0  # s: the Sun's altitude is looked up at most this often


class _Archived(Payload):
    imageName: ImageNameText


class _Failed(Payload):
    imageName: ImageNameText
    description: str = Field(max_length=2000)


class HealthWatch:
    """The rules' ears and voice. It holds its subscriptions itself, so that following
    other CSCs anew lets go of its own and of nothing else the gateway follows."""

    def __init__(
        self,
        *,
        prefix: str,
        alarms: Alarms,
        announce: Announce,
        enabled: Callable[[], bool],
        log: FilteringBoundLogger,
        name: str,
    ) -> None:
        self.health = DmHealth(HealthConfig(), current_tai())
        self._prefix = prefix  # of the watched CSCs' addresses: the gateway's own
        self._alarms = alarms
        self._announce = announce
        self._enabled = enabled
        self._log = log
        self._followed = Followers(log, f"{name}-dm-health")
        self._bus: Transport | None = None  # what the subscriptions were made on
        self._sun: tuple[float, bool] | None = None  # (when looked, night?)

    async def configure(self, config: HealthConfig, bus: Transport) -> None:
        """Follow on ``bus`` what ``config`` watches (and stop following what it no
        longer does)."""
        await self.close()
        self.health = DmHealth(config, current_tai())
        self._bus = bus
        for text in config.watched:
            address = CscAddress.parse(text, self._prefix)
            name = f"{address.name}:{address.index}"
            await self._followed.parsed(bus, address, g.SUMMARY_STATE, self._on_state(name))
            await self._followed.parsed(bus, address, g.HEARTBEAT, self._on_heartbeat(name))
            if address.name == "Archiver":
                await self._followed.raw(bus, address.event("imageArchived"),
                                         self._on_archived(name))  # fmt: skip
                await self._followed.raw(bus, address.event("imageRetrievalFailed"),
                                         self._on_failed(name))  # fmt: skip

    async def close(self) -> None:
        """Stop hearing what :meth:`configure` followed."""
        bus, self._bus = self._bus, None
        await self._followed.close(bus)

    def _on_state(self, name: str) -> Callable[[Parsed[g.SummaryState]], None]:
        def heard(event: Parsed[g.SummaryState]) -> None:
            try:
                self.health.state(name, State(event.data.summaryState))
            except ValueError:
                self._log.warning("ignored a state no CSC has", csc=name)

        return heard

    def _on_heartbeat(self, name: str) -> Callable[[Parsed[g.Heartbeat]], None]:
        return lambda _: self.health.heartbeat(name, current_tai())

    def _on_archived(self, name: str) -> Callable[[Received], None]:
        def archived(event: _Archived) -> None:
            self.health.archived(name, event.imageName, current_tai())

        return self._checked(_Archived, "imageArchived", archived)

    def _on_failed(self, name: str) -> Callable[[Received], None]:
        def failed(event: _Failed) -> None:
            if not taken_by(event.imageName, current_tai()):
                self._log.warning("ignored an imageRetrievalFailed for a day to come",
                                     image=event.imageName)  # fmt: skip
                return
            self.health.retrieval_failed(name, event.imageName, event.description[:200])

        return self._checked(_Failed, "imageRetrievalFailed", failed)

    def _checked(
        self, model: type[E], what: str, act: Callable[[E], None]
    ) -> Callable[[Received], None]:
        """A handler of raw ``what`` events: live ones only, each checked against
        ``model`` where it is parsed (a malformed one is logged and dropped)."""

        def heard(message: Received) -> None:
            if message.retained:
                return
            try:
                event = parse_payload(model, message.data)
            except ValueError as exc:
                self._log.warning(f"ignored a malformed {what}", error=str(exc))
                return
            act(event)

        return heard

    async def judge(self) -> None:
        """The verdicts, every ``judge_interval`` while ENABLED (a gateway that is not is
        not watching, and says nothing)."""
        while True:
            await asyncio.sleep(self.health.config.judge_interval)
            if not self._enabled():
                continue
            night = await self._night()
            now = current_tai()
            changed = [
                alarm
                for verdict in self.health.verdicts(now, night)
                if (alarm := self._alarms.get(verdict.name)).set_severity(
                    verdict.severity, verdict.reason, now
                )
            ]
            await self._announce(changed)

    async def _night(self) -> bool:
        mode = self.health.config.night
        if mode != "sun":
            return mode == "always"
        looked = time.monotonic()
        if self._sun is None or looked - self._sun[0] >= _SUN_EVERY:
            altitude = await asyncio.to_thread(sun_altitude, current_tai())
            self._sun = (looked, altitude < _NIGHT_SUN)
        return self._sun[1]
