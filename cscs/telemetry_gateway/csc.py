"""``TelemetryGateway:0``: DM's voice towards the OCS (LDM-148 "Telemetry Gateway").

It reads the DM-internal topics, checks each message where it parses it
(:mod:`cscs.telemetry_gateway.inputs`), and publishes an image's QC summary once as
``imageQuality`` and each stage as ``processingStatus``. Threshold rules on the QC
(:mod:`cscs.telemetry_gateway.thresholds`) drive alarms as the observatory's Watcher
has them (:mod:`cscs.telemetry_gateway.alarms`): each change is an ``alarm`` event and
the retained ``alarms`` event always lists every alarm that is not nominal, so a
display that starts late sees them at once. Operators ``acknowledge``, ``mute`` and
``unmute`` them by name or glob.

The DM side is read from ``start`` to ``standby`` on a connection with a session the DM
broker keeps, each message acknowledged only once it is safe in the queue to the OCS
side; the queue is sent while the CSC is ENABLED (the OCS's control of what DM says)
and held otherwise, so nothing DM says is lost to a restart, an outage or a disable.
Refused messages are logged (rate-limited) and counted (:attr:`counts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from cscs.core.broker_address import BrokerAddress
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.logs import Throttle
from cscs.core.sequence import SequenceGaps
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait, keep_running
from cscs.core.transport import ConnectionState, Message
from cscs.telemetry_gateway.alarms import Alarm, AlarmError, Alarms, Severity
from cscs.telemetry_gateway.inputs import DmInputError, message_key, parse_dm_message
from cscs.telemetry_gateway.interface import (
    ACKNOWLEDGE,
    ALARM,
    ALARMS,
    CONFIG_DIR,
    IMAGE_QUALITY,
    INTERFACE,
    LINK_STATUS,
    MUTE,
    PROCESSING_STATUS,
    UNMUTE,
    Acknowledge,
    AlarmEvent,
    AlarmsNow,
    GatewayConfig,
    ImageQuality,
    Mute,
    Unmute,
)
from cscs.telemetry_gateway.link import OcsLink
from cscs.telemetry_gateway.thresholds import ThresholdState
from cscs.telemetry_gateway.watching import HealthWatch

__all__ = ["TelemetryGatewayCsc"]

_QUEUE = 10_000  # DM-side messages waiting to be handled; more are counted as dropped
_FOR_EVER = 365 * 86400.0  # s


class TelemetryGatewayCsc(BaseCsc[GatewayConfig]):
    interface = INTERFACE
    config_schema = GatewayConfig
    default_config_dir: ClassVar[Path | None] = CONFIG_DIR

    def __init__(self, index: int = 0, **kwargs: Any) -> None:
        super().__init__(index, **kwargs)
        self.alarms = Alarms()
        self.thresholds: list[ThresholdState] = []
        self.counts: Counter[str] = Counter()  # forwarded, refused, duplicate, missed, …
        self._refusals = Throttle(10.0)
        self._gaps = SequenceGaps()  # in each DM topic's seq
        self._gap_logs = Throttle(10.0)
        self._reader: asyncio.Task[None] | None = None
        self._reading: tuple[str, str] | None = None  # the DM broker and prefix read
        self._subscribed = asyncio.Event()  # the reader's session is made
        self.link = OcsLink(
            topic=self.address.event,
            publish=lambda topic, data, wait: self.bus.publish(topic, data, qos=1, wait=wait),
            bus_connected=lambda: self.bus.state is ConnectionState.CONNECTED,
            say=lambda status: self.publish_event(LINK_STATUS, status, wait=0.0),
            overflowed=self.queue_overflowed,
            log=self.log,
        )
        self.watch = HealthWatch(
            prefix=self.address.prefix,
            alarms=self.alarms,
            announce=self.announce,
            enabled=lambda: self.state is State.ENABLED,
            log=self.log,
            name=str(self.address),
        )

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [
            bind(ACKNOWLEDGE, self.do_acknowledge),
            bind(MUTE, self.do_mute),
            bind(UNMUTE, self.do_unmute),
        ]

    # ---- life ------------------------------------------------------------------------

    async def configure(self, config: GatewayConfig) -> None:
        """New rules start from what they see next; alarms stay as they are (an
        operator may still have to acknowledge one whose rule has gone)."""
        self.thresholds = [ThresholdState(rule) for rule in config.rules]
        await self.watch.configure(config.health, self.bus)
        outbox = self.state_dir / f"TelemetryGateway-{self.address.index}-outbox.sqlite"
        try:
            await self.link.open(outbox, config.queue_capacity)
        except (OSError, sqlite3.Error) as exc:
            raise ExpectedError(
                f"cannot open the queue to the OCS side at {outbox}: {exc}"
            ) from None
        wanted = (config.dm_broker, config.dm_prefix)
        if wanted != self._reading:  # read what the configuration names
            await self._stop_reading()
            self._reading = wanted
            self._subscribed = asyncio.Event()
            read = functools.partial(self._read_dm, *wanted)
            self._reader = asyncio.create_task(
                keep_running(read, "dm-input", self.log, self.task_failed),
                name=f"{self.address}-dm-input",
            )
        # `start` is done once the DM side is read: from then on the DM broker keeps
        # what comes for the gateway, whatever happens to it.
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._subscribed.wait()
        except TimeoutError:
            await self._stop_reading()
            where = config.dm_broker or self.broker.url
            raise ExpectedError(
                f"the DM side's broker at {where} did not answer within {self.connect_timeout:g} s"
            ) from None

    async def close(self) -> None:
        try:
            await self._stop_reading()
            await self.watch.close()
            await super().close()
        finally:
            await self.link.close()

    async def _stop_reading(self) -> None:
        if self._reader is not None:
            await cancel_and_wait([self._reader], self.log, "reconfiguring")
            self._reader, self._reading = None, None

    async def state_changed(self, old: State, new: State) -> None:
        """ENABLED: what is queued goes out. Otherwise it is held (and DM input still
        read and queued) until STANDBY, where the DM side stops being read: its broker
        keeps what comes meanwhile for the next ``start``."""
        self._set_sending()
        if new is State.STANDBY:
            await self._stop_reading()

    def _set_sending(self) -> None:
        if self.state is State.ENABLED:
            self.link.sending.set()
        else:
            self.link.sending.clear()

    async def __aenter__(self) -> TelemetryGatewayCsc:
        await super().__aenter__()
        self._set_sending()
        self.keep_running(self._expire_mutes, "mutes")
        self.keep_running(self.watch.judge, "dm-health")
        self.keep_running(self.link.forward, "ocs-link")
        self.keep_running(lambda: self.link.watch(self.config.link_status_interval), "link-status")
        await self._publish_alarms()
        return self

    # ---- the DM side -----------------------------------------------------------------

    async def _read_dm(self, broker: str, prefix: str) -> None:
        """The DM side, on a connection of its own (to the CSC's broker, or the
        DM-internal one the configuration names, so that an outage of the OCS side does
        not stop DM's input). Its session outlives the process: while the gateway is
        away the DM broker keeps what is published for it, and a message is acknowledged
        only once it is safe in the queue, so a crash at any moment loses none."""
        connector = BrokerAddress.from_url(broker) if broker else self.broker
        dm_client = self.address.root.replace("/", "-") + "-dm"  # the same across restarts
        bus = connector.transport(
            client_id=dm_client,
            persistent_session=True,
            manual_ack=True,
            connect_timeout=_FOR_EVER,  # `start` says when it has waited long enough
        )
        # Subscribed before connecting: what the broker kept comes at once, and must
        # find a reader (one that found none would be acknowledged, and lost).
        messages = await bus.subscribe(f"{prefix}/#", maxsize=_QUEUE)
        async with bus:
            self._subscribed.set()
            async for message in messages:
                await self.heard(message, prefix)

    async def heard(self, message: Message, prefix: str) -> None:
        """One DM-side message: checked, queued for the OCS side once, judged by the
        rules; then acknowledged to the DM broker. A queue that cannot be written fails
        the reader (FAULT, with the cause): the message is not acknowledged, and the DM
        broker sends it again when the reader reconnects."""
        await self._take(message, prefix)
        message.ack()

    async def _take(self, message: Message, prefix: str) -> None:
        if message.retain:
            return
        try:
            parsed = parse_dm_message(
                message.topic, message.payload, prefix, self.config.max_message_bytes
            )
        except DmInputError as exc:
            self.counts["refused"] += 1
            self._refusals.warning(self.log, "refused a DM message", topic=message.topic[:200],
                                   reason=str(exc), refused=self.counts["refused"])  # fmt: skip
            return
        if parsed is None:
            return
        payload, key = parsed.payload, message_key(message.topic, message.payload)
        if isinstance(payload, ImageQuality):
            queued = await self.link.send(IMAGE_QUALITY, payload, droppable=True, received=key)
        else:
            queued = await self.link.send(PROCESSING_STATUS, payload, droppable=False, received=key)
        if not queued:
            self.counts["duplicate"] += 1
            return
        self.counts["forwarded"] += 1
        self._check_sequence(message.topic, parsed.seq)
        if isinstance(payload, ImageQuality):
            await self._judge(payload)
        elif payload.stage == "image-qc":
            self.watch.health.qc_stage()

    def _check_sequence(self, topic: str, seq: int) -> None:
        """A DM service numbers each topic's messages (ICD §1): a gap in the numbers is
        messages lost before the gateway had them (a session the DM broker dropped, a
        full queue there), said in the log and counted (``missed``)."""
        missed = self._gaps.heard(topic, seq)
        if missed:
            self.counts["missed"] += missed
            self._gap_logs.warning(self.log, "DM messages missed: a gap in their seq",
                                   topic=topic[:200], missed=missed, seq=seq,
                                   missed_in_all=self.counts["missed"])  # fmt: skip

    async def _judge(self, quality: ImageQuality) -> None:
        now = current_tai()
        changed: list[Alarm] = []
        for state in self.thresholds:
            rule = state.rule
            value = getattr(quality, rule.metric, None)
            if rule.instrument and rule.instrument != quality.instrument:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue  # not measured for this image: nothing to judge
            severity, reason = state.judge(float(value), quality.imageName)
            alarm = self.alarms.get(rule.name)
            if alarm.set_severity(severity, reason, now):
                changed.append(alarm)
        await self.announce(changed)

    # ---- alarms ----------------------------------------------------------------------

    async def announce(self, changed: Sequence[Alarm]) -> None:
        """Each change as an ``alarm`` event, as it is now (taken before any await, so
        that a change made meanwhile is its own event), then the retained list."""
        events = [AlarmEvent(**alarm.as_event()) for alarm in changed]
        for alarm in changed:
            self.log.info("alarm", name=alarm.name, severity=alarm.severity.name,
                          maxSeverity=alarm.maxSeverity.name, reason=alarm.reason)  # fmt: skip
        for event in events:
            await self.link.send(ALARM, event, droppable=False)
        if changed:
            await self._publish_alarms()

    async def queue_overflowed(self, dropped: int | None) -> None:
        """The queue to the OCS side was full: messages were lost, and the staff must
        know how many (``dropped``); None: it has room again, the alarm clears."""
        alarm = self.alarms.get("gateway.queue")
        if dropped is None:
            severity, reason = Severity.NONE, ""
        else:
            severity = Severity.SERIOUS
            reason = f"{dropped} queued messages dropped: the OCS side was unreachable too long"
        if alarm.set_severity(severity, reason, current_tai()):
            await self.announce([alarm])

    async def _publish_alarms(self) -> None:
        listed = [alarm.as_event() for alarm in self.alarms.not_nominal()]
        # Retained and remembered: a broker that was away gets it again when it is back.
        await self.publish_event(ALARMS, AlarmsNow(alarms=json.dumps(listed)), wait=0.0)

    async def _expire_mutes(self) -> None:
        while True:
            await asyncio.sleep(self.config.mute_check_interval)
            await self.announce(self.alarms.expire_mutes(current_tai()))

    async def do_acknowledge(self, params: Acknowledge, context: CommandContext) -> str:
        with _as_expected():
            changed = self.alarms.acknowledge(
                params.name,
                Severity(params.severity),
                params.acknowledgedBy,
                current_tai(),
                exact=params.exact,
            )
        await self.announce(changed)
        return f"acknowledged {len(changed)} alarm(s)"

    async def do_mute(self, params: Mute, context: CommandContext) -> str:
        with _as_expected():
            changed = self.alarms.mute(
                params.name, params.duration, Severity(params.severity), params.mutedBy,
                current_tai(), exact=params.exact,
            )  # fmt: skip
        await self.announce(changed)
        return f"muted {len(changed)} alarm(s) for {params.duration:g} s"

    async def do_unmute(self, params: Unmute, context: CommandContext) -> str:
        with _as_expected():
            changed = self.alarms.unmute(params.name, exact=params.exact)
        await self.announce(changed)
        return f"unmuted {len(changed)} alarm(s)"


@contextlib.contextmanager
def _as_expected() -> Iterator[None]:
    """An :class:`AlarmError` as the command's FAILED reason."""
    try:
        yield
    except AlarmError as exc:
        raise ExpectedError(str(exc)) from None
