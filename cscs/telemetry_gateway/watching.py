"""What the gateway hears of DM's CSCs for the health rules (:mod:`.health`): each watched
CSC's ``summaryState`` and ``heartbeat``, each watched archiver's ``imageArchived`` and
``imageRetrievalFailed``; and, once a second while ENABLED, the rules' verdicts applied
to the alarms. Payloads are checked where they are parsed: a forged or broken one is
dropped (logged by the framework), never a crash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import Field

from cscs.camera.naming import ImageName, ImageNameText, day_obs
from cscs.camera.observatory import sun_altitude
from cscs.core import generic as g
from cscs.core.remote import Parsed, Received
from cscs.core.schema import Payload, parse_payload
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress
from cscs.telemetry_gateway.health import DmHealth, HealthConfig

if TYPE_CHECKING:
    from cscs.telemetry_gateway.csc import TelemetryGatewayCsc

__all__ = ["HealthWatch"]

E = TypeVar("E", bound=Payload)
_NIGHT_SUN = -12.0  # deg: nautical twilight over
_SUN_EVERY = 60.0  # s: the Sun's altitude is looked up at most this often


class _Archived(Payload):
    imageName: ImageNameText


class _Failed(Payload):
    imageName: ImageNameText
    description: str = Field(max_length=2000)


class HealthWatch:
    def __init__(self, csc: TelemetryGatewayCsc) -> None:
        self.csc = csc
        self.health = DmHealth(HealthConfig(), current_tai())
        self._sun: tuple[float, bool] | None = None  # (when looked, night?)

    async def configure(self, config: HealthConfig) -> None:
        """Follow what ``config`` watches (and stop following what it no longer does)."""
        self.health = DmHealth(config, current_tai())
        csc = self.csc
        await csc.unfollow()
        for text in config.watched:
            address = CscAddress.parse(text, csc.address.prefix)
            name = f"{address.name}:{address.index}"
            await csc.follow(address, g.SUMMARY_STATE, self._on_state(name))
            await csc.follow(address, g.HEARTBEAT, self._on_heartbeat(name))
            if address.name == "Archiver":
                await csc.follow_topic(address.event("imageArchived"), self._on_archived(name))
                await csc.follow_topic(address.event("imageRetrievalFailed"),
                                       self._on_failed(name))  # fmt: skip

    def _on_state(self, name: str) -> Callable[[Parsed[g.SummaryState]], None]:
        def heard(event: Parsed[g.SummaryState]) -> None:
            try:
                self.health.state(name, State(event.data.summaryState))
            except ValueError:
                self.csc.log.warning("ignored a state no CSC has", csc=name)

        return heard

    def _on_heartbeat(self, name: str) -> Callable[[Parsed[g.Heartbeat]], None]:
        return lambda _: self.health.heartbeat(name, current_tai())

    def _on_archived(self, name: str) -> Callable[[Received], None]:
        def archived(event: _Archived) -> None:
            self.health.archived(name, event.imageName, current_tai())

        return self._checked(_Archived, "imageArchived", archived)

    def _on_failed(self, name: str) -> Callable[[Received], None]:
        def failed(event: _Failed) -> None:
            if not _plausible(event.imageName):
                self.csc.log.warning("ignored an imageRetrievalFailed for a day to come",
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
                self.csc.log.warning(f"ignored a malformed {what}", error=str(exc))
                return
            act(event)

        return heard

    async def judge(self, interval: float = 1.0) -> None:
        """The verdicts, every ``interval`` while ENABLED (a gateway that is not is not
        watching, and says nothing)."""
        while True:
            await asyncio.sleep(interval)
            if self.csc.state is not State.ENABLED:
                continue
            night = await self._night()
            now = current_tai()
            changed = [
                alarm
                for verdict in self.health.verdicts(now, night)
                if (alarm := self.csc.alarms.get(verdict.name)).set_severity(
                    verdict.severity, verdict.reason, now
                )
            ]
            await self.csc.announce(changed)

    async def _night(self) -> bool:
        mode = self.health.config.night
        if mode != "sun":
            return mode == "always"
        looked = time.monotonic()
        if self._sun is None or looked - self._sun[0] >= _SUN_EVERY:
            altitude = await asyncio.to_thread(sun_altitude, current_tai())
            self._sun = (looked, altitude < _NIGHT_SUN)
        return self._sun[1]


def _plausible(image: str) -> bool:
    """An image taken by now: its day of observation is not after today's (a forged
    name of a day to come would hold an alarm until that day)."""
    return ImageName.parse(image).day_obs <= day_obs(current_tai() + 86400.0)
