"""The base of every CSC: life cycle, commands, generic events, bus and logs wired together.

A component subclasses :class:`BaseCsc`, declares its :class:`Interface` (generic topics
plus its own), binds its commands in :meth:`component_commands`, and overrides the
begin/end hooks it needs (``begin_start`` … ``end_exitControl``) and :meth:`configure`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TextIO

import aiomqtt

from cscs import __version__
from cscs.core import generic as g
from cscs.core.auth import AuthList
from cscs.core.bus import BrokerAddress, Bus, Message, Subscription
from cscs.core.commands import CommandBinding, CommandContext, bind, execute
from cscs.core.config import (
    AppliedConfiguration,
    ConfigSchema,
    ConfigSource,
    list_overrides,
    load_configuration,
)
from cscs.core.errors import ExpectedError
from cscs.core.logs import make_csc_logger
from cscs.core.protocol import (
    Ack,
    AckCode,
    CommandRequest,
    Refusal,
    Unreadable,
    encode,
    parse_command,
)
from cscs.core.remote import Received
from cscs.core.schema import EventSpec, Interface, NoParams, Payload, TelemetrySpec
from cscs.core.settings import default_identity, default_state_dir
from cscs.core.states import LIFECYCLE_COMMANDS, Lifecycle, State
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import DEFAULT_PREFIX, CscAddress

__all__ = ["ICD_VERSION", "BaseCsc"]

ICD_VERSION = "1.0"
_LOG_QUEUE_SIZE = 1000
_ACK_WAIT = 10.0  # how long an ack may wait for a lost broker to come back


class BaseCsc:
    """A Commandable SAL Component on the MQTT bus (ICD §1-4)."""

    interface: ClassVar[Interface] = g.GENERIC
    config_schema: ClassVar[type[ConfigSchema]] = ConfigSchema
    # Directory of the configuration shipped with the package (``_init.yaml`` …).
    default_config_dir: ClassVar[Path | None] = None

    def __init__(
        self,
        index: int = 0,
        *,
        broker: BrokerAddress | None = None,
        prefix: str = DEFAULT_PREFIX,
        initial_state: State = State.STANDBY,
        config_dir: Path | None = None,
        site: str | None = None,
        state_dir: Path | None = None,
        identity: str | None = None,
        heartbeat_interval: float = 1.0,
        keepalive: int = 5,
        connect_timeout: float = 10.0,
        log_stream: TextIO | None = None,
    ) -> None:
        if initial_state is State.OFFLINE:
            raise ValueError("a CSC cannot start in OFFLINE")
        self.address = CscAddress(self.interface.name, index, prefix)
        self.broker = broker or BrokerAddress()
        self.identity = identity or default_identity()
        self.lifecycle = Lifecycle(initial_state)
        self.auth = AuthList()
        self.log_level = logging.INFO
        self.config: ConfigSchema | None = None
        directory = config_dir / self.address.name if config_dir else self.default_config_dir
        self.config_source = ConfigSource(directory, site) if directory else None
        # What must survive a restart lives here (CSCS_STATE_DIR).
        self.state_dir = state_dir or default_state_dir()
        self.heartbeat_interval = heartbeat_interval
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.done = asyncio.Event()

        self._log_queue: asyncio.Queue[g.LogMessage] = asyncio.Queue(_LOG_QUEUE_SIZE)
        self.log = make_csc_logger(
            str(self.address), lambda: self.log_level, self._queue_log, log_stream
        )
        self._seq: dict[str, int] = {}
        self._retained: dict[str, bytes] = {}
        self._transition_lock = asyncio.Lock()
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._enabled_tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._followers: list[tuple[Subscription, asyncio.Task[None]]] = []
        self._bus: Bus | None = None
        self._bindings: dict[str, CommandBinding[Any]] = {}
        for binding in self._generic_bindings() + list(self.component_commands()):
            if self.interface.command(binding.spec.name) is None:
                raise ValueError(f"{self.address.name}: command {binding.spec.name} not declared")
            self._bindings[binding.spec.name] = binding
        missing = {c.name for c in self.interface.commands} - set(self._bindings)
        if missing:
            raise ValueError(f"{self.address.name}: no handler for {', '.join(sorted(missing))}")
        self._event_names = {e.name for e in self.interface.events}
        self._telemetry_names = {t.name for t in self.interface.telemetry}

    # ---- for subclasses ----------------------------------------------------------------

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        """The component's own commands, each made with :func:`bind`."""
        return ()

    async def configure(self, config: ConfigSchema) -> None:
        """Apply a validated configuration (called by ``start``); raise to refuse it."""
        self.config = config

    async def begin_start(self, params: g.StartParams) -> None:
        """Load and apply the configuration named by ``configurationOverride``."""
        if self.config_source is None:
            if params.configurationOverride:
                raise ExpectedError(f"{self.address} takes no configuration override")
            return
        applied = load_configuration(
            self.config_schema, self.config_source, params.configurationOverride
        )
        await self.configure(applied.config)
        await self._publish_configuration_applied(applied)

    async def end_start(self, params: g.StartParams) -> None: ...
    async def begin_enable(self, params: NoParams) -> None: ...
    async def end_enable(self, params: NoParams) -> None: ...
    async def begin_disable(self, params: NoParams) -> None: ...
    async def end_disable(self, params: NoParams) -> None: ...
    async def begin_standby(self, params: NoParams) -> None: ...
    async def end_standby(self, params: NoParams) -> None: ...
    async def begin_exitControl(self, params: NoParams) -> None: ...
    async def end_exitControl(self, params: NoParams) -> None: ...

    async def state_changed(self, old: State, new: State) -> None:
        """Called after every state change (commands and faults), before it is published."""

    # ---- running -----------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.lifecycle.state

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError(f"{self.address} is not running; use `async with csc:`")
        return self._bus

    async def __aenter__(self) -> BaseCsc:
        will = aiomqtt.Will(
            self.address.event("summaryState"),
            encode(
                g.SummaryState(summaryState=State.OFFLINE, name="OFFLINE", lost=True).model_dump()
                | {"seq": 0, "sent_tai": current_tai()}
            ),
            qos=1,
            retain=True,
        )
        bus = Bus(
            self.broker,
            client_id=f"{self.address.name}-{self.address.index}-{id(self):x}",
            will=will,
            keepalive=self.keepalive,
            on_connect=self._on_connect,
            connect_timeout=self.connect_timeout,
        )
        commands = await bus.subscribe(f"{self.address.root}/cmd/+", maxsize=10_000)
        self._bus = bus
        try:
            await bus.__aenter__()
        except BaseException:
            self._bus = None
            raise
        self._background = [
            asyncio.create_task(self._read_commands(commands), name=f"{self.address}-commands"),
            asyncio.create_task(self._beat(), name=f"{self.address}-heartbeat"),
            asyncio.create_task(self._publish_logs(), name=f"{self.address}-logs"),
        ]
        self.log.info("running", broker=self.broker.url, state=self.state.name)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop everything this CSC started; the last will is not sent (clean exit)."""
        await self.unfollow()
        await cancel_and_wait([*self._background, *self._command_tasks], self.log, "closing")
        self._background = []
        if self._bus is not None:
            await self._bus.close()
            self._bus = None

    async def run(self) -> None:
        """Run until ``exitControl`` or :meth:`stop`."""
        async with self:
            await self.done.wait()
            # exitControl's own ack (and any other in flight) must go out before we close.
            pending = [t for t in self._command_tasks if t is not asyncio.current_task()]
            if pending:
                await asyncio.wait(pending, timeout=_ACK_WAIT)

    async def stop(self, reason: str) -> None:
        """Leave at once (SIGTERM, Ctrl-C): tell monitors OFFLINE, then let :meth:`run`
        return. Unlike a crash, this is not ``lost``."""
        self.log.warning("stopping", reason=reason, state=self.state.name)
        await self.publish_event(
            g.SUMMARY_STATE,
            g.SummaryState(summaryState=int(State.OFFLINE), name=State.OFFLINE.name),
            wait=2.0,
        )
        self.done.set()

    # ---- listening to other CSCs -------------------------------------------------------

    async def follow(self, topic: str, handler: Callable[[Received], None]) -> None:
        """Hear other CSCs' events or telemetry on ``topic`` (MQTT wildcards allowed) until
        :meth:`unfollow`; unreadable messages are logged and skipped."""
        subscription = await self.bus.subscribe(topic, maxsize=100_000)
        task = asyncio.create_task(
            self._follow(subscription, handler), name=f"{self.address}-follow-{topic}"
        )
        self._followers.append((subscription, task))

    async def unfollow(self) -> None:
        """Stop hearing everything :meth:`follow` subscribed to."""
        followers, self._followers = self._followers, []
        await cancel_and_wait([task for _, task in followers], self.log, "unfollowing")
        for subscription, _ in followers:
            if self._bus is not None:
                self._bus.unsubscribe(subscription)

    async def _follow(
        self, subscription: Subscription, handler: Callable[[Received], None]
    ) -> None:
        async for message in subscription:
            received = Received.from_message(message)
            if received is None:
                self.log.warning("ignored an unreadable message", topic=message.topic)
                continue
            handler(received)

    # ---- publishing --------------------------------------------------------------------

    async def publish_event(
        self, spec: EventSpec[Payload], payload: Payload, *, wait: float = 30.0
    ) -> bool:
        """Publish a declared event; retained ones are republished after a reconnect."""
        if spec.name not in self._event_names:
            raise ValueError(f"{self.address.name} does not declare event {spec.name}")
        topic = self.address.event(spec.name)
        data = self._stamp(topic, payload)
        if spec.retained:
            self._retained[topic] = data
        return await self.bus.publish(
            topic, data, qos=spec.qos, retain=spec.retained, wait=wait if spec.qos else 0.0
        )

    async def publish_telemetry(self, spec: TelemetrySpec[Payload], payload: Payload) -> bool:
        """Publish declared telemetry (QoS 0: dropped, not queued, while disconnected)."""
        if spec.name not in self._telemetry_names:
            raise ValueError(f"{self.address.name} does not declare telemetry {spec.name}")
        topic = self.address.telemetry(spec.name)
        return await self.bus.publish(topic, self._stamp(topic, payload), qos=0, wait=0.0)

    def _stamp(self, topic: str, payload: Payload) -> bytes:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        return encode(payload.model_dump() | {"seq": seq, "sent_tai": current_tai()})

    async def _send_ack(self, ack: Ack) -> None:
        wire = ack.to_wire() | {"sent_tai": current_tai()}
        if not await self.bus.publish(self.address.ack, encode(wire), qos=1, wait=_ACK_WAIT):
            self.log.warning("could not deliver ack", command=ack.command, ack=ack.code.name)

    async def _on_connect(self) -> None:
        if not self._retained:
            await self._publish_initial_events()
            return
        for topic, data in list(self._retained.items()):
            await self.bus.publish(topic, data, qos=1, retain=True)

    async def _publish_initial_events(self) -> None:
        await self._publish_summary_state()
        await self.publish_event(
            g.SOFTWARE_VERSIONS,
            g.SoftwareVersions(
                cscVersion=__version__,
                xmlVersion=ICD_VERSION,
                subsystemVersions=f"python={sys.version.split()[0]}",
            ),
        )
        source = self.config_source
        await self.publish_event(
            g.CONFIGURATIONS_AVAILABLE,
            g.ConfigurationsAvailable(
                overrides=",".join(list_overrides(source)) if source else "",
                version=__version__,
                url=source.directory.resolve().as_uri() if source else "",
            ),
        )
        await self._publish_auth_list()
        await self.publish_event(g.LOG_LEVEL, g.LogLevel(level=self.log_level))

    async def _publish_summary_state(self) -> None:
        state = self.state
        await self.publish_event(
            g.SUMMARY_STATE, g.SummaryState(summaryState=int(state), name=state.name)
        )

    async def _publish_auth_list(self) -> None:
        await self.publish_event(
            g.AUTH_LIST,
            g.AuthListPayload(
                authorizedUsers=self.auth.authorized_users_text,
                nonAuthorizedCSCs=self.auth.non_authorized_cscs_text,
            ),
        )

    async def _publish_configuration_applied(self, applied: AppliedConfiguration[Any]) -> None:
        url = self.config_source.directory.resolve().as_uri() if self.config_source else ""
        await self.publish_event(
            g.CONFIGURATION_APPLIED,
            g.ConfigurationApplied(configurations=applied.names, version=applied.version, url=url),
        )

    # ---- background tasks --------------------------------------------------------------

    async def _beat(self) -> None:
        while True:
            await self.publish_event(g.HEARTBEAT, g.Heartbeat(), wait=0.0)
            await asyncio.sleep(self.heartbeat_interval)

    def _queue_log(self, record: g.LogMessage) -> None:
        if self._log_queue.full():  # keep the newest: they say what is wrong now
            self._log_queue.get_nowait()
        self._log_queue.put_nowait(record)

    async def _publish_logs(self) -> None:
        while True:
            record = await self._log_queue.get()
            await self.publish_event(g.LOG_MESSAGE, record, wait=5.0)

    # ---- commands ----------------------------------------------------------------------

    async def _read_commands(self, commands: Subscription) -> None:
        async for message in commands:
            self._receive_command(message)

    def _receive_command(self, message: Message) -> None:
        name = message.topic.rsplit("/", 1)[-1]
        if message.retain:
            # A retained command would run again at every reconnect: never obey one.
            self.log.warning(
                "ignored a retained command; commands must not be retained", command=name
            )
            return
        parsed = parse_command(name, message.payload, self.interface)
        if isinstance(parsed, Unreadable):
            self.log.warning("dropped an unreadable command", reason=parsed.reason)
            return
        if isinstance(parsed, Refusal):
            refusal = Ack(
                parsed.seq, parsed.origin, parsed.command, AckCode.FAILED, parsed.reason, error=1
            )
            self._spawn(self._send_ack(refusal), f"refuse-{name}")
            return
        self._dispatch(parsed)

    def _dispatch(self, request: CommandRequest) -> None:
        name = request.command
        if not self.auth.permits(request.identity, self.identity):
            noperm = Ack(
                request.seq,
                request.origin,
                name,
                AckCode.NOPERM,
                f"{request.identity} is not authorized to command {self.address}",
            )
            self._spawn(self._send_ack(noperm), f"noperm-{name}")
            return
        binding = self._bindings[name]
        allowed = binding.spec.allowed_states
        if allowed is not None and self.state not in allowed:
            wanted = " or ".join(sorted(s.name for s in allowed))
            refusal = Ack(
                request.seq,
                request.origin,
                name,
                AckCode.FAILED,
                f"{name} not allowed in state {self.state.name} (needs {wanted})",
                error=1,
            )
            self._spawn(self._send_ack(refusal), f"refuse-{name}")
            return
        run = execute(request, binding, self._send_ack, self.log, binding.spec.timeout)
        task = self._spawn(run, f"cmd-{name}-{request.origin}-{request.seq}")
        if allowed is not None and allowed <= {State.ENABLED}:
            self._enabled_tasks.add(task)
            task.add_done_callback(self._enabled_tasks.discard)

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[None]:
        async def wrapper() -> None:
            await coro

        task = asyncio.create_task(wrapper(), name=name)
        self._command_tasks.add(task)
        task.add_done_callback(self._command_tasks.discard)
        return task

    # ---- the life cycle ----------------------------------------------------------------

    def _generic_bindings(self) -> list[CommandBinding[Any]]:
        def transition(hooks: tuple[Callable[[Any], Awaitable[None]], ...]) -> Any:
            async def handler(params: Payload, context: CommandContext) -> str | None:
                await self._transition(context.request.command, params, *hooks)
                return None

            return handler

        return [
            bind(g.START, transition((self.begin_start, self.end_start))),
            bind(g.ENABLE, transition((self.begin_enable, self.end_enable))),
            bind(g.DISABLE, transition((self.begin_disable, self.end_disable))),
            bind(g.STANDBY, transition((self.begin_standby, self.end_standby))),
            bind(g.EXIT_CONTROL, transition((self.begin_exitControl, self.end_exitControl))),
            bind(g.SET_LOG_LEVEL, self._set_log_level),
            bind(g.SET_AUTH_LIST, self._set_auth_list),
        ]

    async def _transition(
        self,
        command: str,
        params: Payload,
        begin: Callable[[Any], Awaitable[None]],
        end: Callable[[Any], Awaitable[None]],
    ) -> None:
        assert command in LIFECYCLE_COMMANDS
        async with self._transition_lock:
            refusal = self.lifecycle.refusal(command)
            if refusal:
                raise ExpectedError(refusal)
            old = self.state
            await begin(params)  # failing here leaves the state as it was
            new = self.lifecycle.apply(command)
            try:
                await end(params)
            except BaseException:
                self.lifecycle.restore(old)
                raise
            await self._state_changed(old, new)

    async def _state_changed(self, old: State, new: State) -> None:
        self.log.info("summary state changed", old=old.name, new=new.name)
        if old is State.ENABLED:
            reason = f"aborted: {self.address} left ENABLED for {new.name}"
            current = asyncio.current_task()
            for task in list(self._enabled_tasks):
                if task is not current:  # a command that faults the CSC finishes itself
                    task.cancel(reason)
        await self.state_changed(old, new)
        await self._publish_summary_state()
        if new is State.OFFLINE:
            self.done.set()

    async def fault(self, code: int, report: str, tb: str = "") -> None:
        """Go to FAULT by itself: publish ``errorCode``, then ``summaryState`` (ICD §3)."""
        if not self.lifecycle.allows("fault"):
            self.log.warning("fault while it cannot fault", state=self.state.name, report=report)
            return
        self.log.error("going to FAULT", errorCode=code, report=report)
        await self.publish_event(
            g.ERROR_CODE, g.ErrorCode(errorCode=code, errorReport=report, traceback=tb)
        )
        old = self.state
        self.lifecycle.fault()
        await self._state_changed(old, State.FAULT)

    async def fault_from_exception(self, code: int, report: str, exc: BaseException) -> None:
        await self.fault(code, f"{report}: {exc}", "".join(traceback.format_exception(exc)))

    # ---- generic commands that keep the state ------------------------------------------

    async def _set_log_level(self, params: g.SetLogLevelParams, _: CommandContext) -> str:
        if not 0 <= params.level <= logging.CRITICAL:
            raise ExpectedError(f"level must be 0-50 (Python logging levels), got {params.level}")
        self.log_level = params.level
        await self.publish_event(g.LOG_LEVEL, g.LogLevel(level=params.level))
        return f"log level {params.level}"

    async def _set_auth_list(self, params: g.SetAuthListParams, _: CommandContext) -> None:
        self.auth = self.auth.edited(params.authorizedUsers, params.nonAuthorizedCSCs)
        await self._publish_auth_list()
