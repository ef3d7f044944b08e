"""The base of every CSC: life cycle, commands, generic events, bus and logs wired together.

A component subclasses ``BaseCsc[ItsConfig]``, declares its :class:`Interface` (generic
topics plus its own) and its ``config_schema``, binds its commands in
:meth:`component_commands`, and overrides :meth:`configure` and the begin/end hooks it
needs (``begin_start`` … ``end_exitControl``). It hears other CSCs with :meth:`follow`
(validated against their declarations) or :meth:`follow_topic` (raw).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TextIO, TypeVar, cast

from cscs.core import generic as g
from cscs.core.auth import AuthList
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.config import ConfigSchema, ConfigSource, default_config, load_configuration
from cscs.core.dispatch import CommandRunner, Dropped, triage
from cscs.core.errors import ExpectedError
from cscs.core.follow import Followers, Listener
from cscs.core.logs import make_csc_logger
from cscs.core.protocol import Ack, CommandRequest, encode
from cscs.core.publisher import Publisher
from cscs.core.remote import Parsed, Received
from cscs.core.report import SelfReport
from cscs.core.retained import RetainedGuard
from cscs.core.schema import EventSpec, Interface, NoParams, Payload, TelemetrySpec
from cscs.core.settings import Settings, default_identity
from cscs.core.states import LIFECYCLE_COMMANDS, Lifecycle, State
from cscs.core.tai import current_tai
from cscs.core.tasks import Jobs, cancel_and_wait, keep_running
from cscs.core.topics import CscAddress
from cscs.core.transport import Connector, Message, Transport, Will
from cscs.core.versions import SOFTWARE_VERSION

__all__ = ["BaseCsc"]

C = TypeVar("C", bound=ConfigSchema)
P = TypeVar("P", bound=Payload)
_ACK_WAIT = 10.0  # how long an ack may wait for a lost broker to come back


class BaseCsc(Generic[C]):
    """A Commandable SAL Component on the bus (ICD §1-4), configured by a ``C``."""

    interface: ClassVar[Interface] = g.GENERIC
    #: The configuration's schema. Every field has a default: those are the values in
    #: force until ``start`` applies the configuration files.
    config_schema: type[C]
    #: Directory of the configuration shipped with the package (``_init.yaml`` …).
    default_config_dir: ClassVar[Path | None] = None
    #: ``softwareVersions.cscVersion``; a component of another package sets its own.
    version: ClassVar[str] = SOFTWARE_VERSION

    def __init__(
        self,
        index: int = 0,
        *,
        settings: Settings | None = None,
        broker: Connector | None = None,
        initial_state: State = State.STANDBY,
        identity: str | None = None,
        heartbeat_interval: float = 1.0,
        keepalive: int = 5,
        connect_timeout: float = 10.0,
        log_stream: TextIO | None = None,
    ) -> None:
        if initial_state is State.OFFLINE:
            raise ValueError("a CSC cannot start in OFFLINE")
        self.settings = settings or Settings()
        self.address = CscAddress(self.interface.name, index, self.settings.prefix)
        self.broker: Connector = broker or self.settings.broker
        self.identity = identity or default_identity()
        self.lifecycle = Lifecycle(initial_state)
        self.auth = AuthList()
        self.log_level = logging.INFO
        self.config: C = default_config(self._schema, type(self).__name__)
        config_dir = self.settings.config_dir
        directory = config_dir / self.address.name if config_dir else self.default_config_dir
        self.config_source = ConfigSource(directory, self.settings.site) if directory else None
        # What must survive a restart lives here (CSCS_STATE_DIR).
        self.state_dir = self.settings.state_directory
        self.heartbeat_interval = heartbeat_interval
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.done = asyncio.Event()

        self.report = SelfReport(
            self, self.publish_event, version=self.version, config_source=self.config_source
        )
        self.log = make_csc_logger(
            str(self.address), lambda: self.log_level, self.report.queue_log, log_stream
        )
        self._publisher = Publisher(self.interface, self.address)
        retained = {self.address.event(e.name) for e in self.interface.events if e.retained}
        self._guard = RetainedGuard(retained, self._publisher)
        self._initial_published = False
        self._transition_lock = asyncio.Lock()
        self._background: list[asyncio.Task[None]] = []
        #: Work started by what the CSC hears; a job's unexpected failure ends in
        #: :meth:`task_failed` unless the job says how to handle it.
        self.jobs = Jobs(self.log, str(self.address), self.task_failed)
        self._followers = Followers(self.log, str(self.address))
        self._bus: Transport | None = None
        bindings: dict[str, CommandBinding[Any]] = {}
        for binding in self._generic_bindings() + list(self.component_commands()):
            if self.interface.command(binding.spec.name) is not binding.spec:
                raise ValueError(
                    f"{self.address.name}: command {binding.spec.name} is bound to a "
                    "declaration its interface does not have"
                )
            bindings[binding.spec.name] = binding
        missing = {c.name for c in self.interface.commands} - set(bindings)
        if missing:
            raise ValueError(f"{self.address.name}: no handler for {', '.join(sorted(missing))}")
        self.commands = CommandRunner(bindings, self._triage, self._send_ack, self.log)

    @property
    def _schema(self) -> type[C]:
        # A class that declares no schema of its own takes the empty one.
        return cast("type[C]", getattr(self, "config_schema", ConfigSchema))

    # ---- for subclasses ----------------------------------------------------------------

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        """The component's own commands, each made with :func:`bind`."""
        return ()

    async def configure(self, config: C) -> None:
        """Apply a validated configuration (called by ``start``); raise to refuse it.

        ``self.config`` is already ``config`` while this runs (so whatever it starts,
        such as a :meth:`follow` handler that fires at once on a retained event, sees the
        new values); if it raises, the previous configuration is put back."""

    async def begin_start(self, params: g.StartParams) -> None:
        """Load and apply the configuration named by ``configurationOverride``."""
        if self.config_source is None:
            if params.configurationOverride:
                raise ExpectedError(f"{self.address} takes no configuration override")
            return
        applied = load_configuration(self._schema, self.config_source, params.configurationOverride)
        previous, self.config = self.config, applied.config
        try:
            await self.configure(applied.config)
        except BaseException:
            self.config = previous
            raise
        await self.report.configuration_applied(applied)

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
        """Called after every state change (commands, the ones a CSC started past STANDBY
        runs by itself, and faults), before it is published."""

    # ---- running -----------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.lifecycle.state

    @property
    def bus(self) -> Transport:
        if self._bus is None:
            raise RuntimeError(f"{self.address} is not running; use `async with csc:`")
        return self._bus

    def _last_will(self) -> Will:
        lost = g.SummaryState(summaryState=State.OFFLINE, name="OFFLINE", lost=True)
        payload = encode(lost.model_dump() | {"seq": 0, "sent_tai": current_tai()})
        return Will(self.address.event(g.SUMMARY_STATE.name), payload, qos=1, retain=True)

    async def __aenter__(self) -> BaseCsc[C]:
        bus = self.broker.transport(
            client_id=f"{self.address.name}-{self.address.index}-{id(self):x}",
            will=self._last_will(),
            keepalive=self.keepalive,
            on_connect=self._on_connect,
            connect_timeout=self.connect_timeout,
        )
        commands = await bus.subscribe(f"{self.address.root}/cmd/+", maxsize=10_000)
        own_retained = await self._guard.subscribe(bus)
        self._bus = bus
        # Started past STANDBY: STANDBY is what the first report says until configured,
        # so nobody acts on an ENABLED that is not listening yet (a header service
        # restarted by its supervisor would miss the next image's start).
        target = self.state
        if target is not State.STANDBY:
            self.lifecycle.restore(State.STANDBY)
        try:
            await bus.__aenter__()
        except BaseException:
            self._bus = None
            raise
        self._background = []
        self.keep_running(lambda: self.report.heartbeats(self.heartbeat_interval), "heartbeat")
        self.keep_running(self.report.publish_logs, "logs")
        self.keep_running(lambda: self._guard.watch(own_retained, bus, self.log), "own-events")
        if target in (State.DISABLED, State.ENABLED):
            await self._start_past_standby(target)
        self.keep_running(lambda: self.commands.read(commands), "commands")
        self.log.info("running", broker=self.broker.url, state=self.state.name)
        return self

    async def _start_past_standby(self, target: State) -> None:
        """Started past STANDBY (`cscs run --state enabled`, how a supervisor restarts a
        CSC): the `start` without override and, for ENABLED, the `enable` a commander
        would send, through the same transitions and hooks, before any command is read
        (they wait). A hook that fails: OFFLINE said, and its error raised (as for a
        command, no FAULT: nothing has been left half-done that an operator must clear,
        and the process ends, for its supervisor to start it again). Stopped meanwhile
        (SIGTERM): no more transitions, and OFFLINE, said then, is the last word."""
        try:
            await self._transition(
                "start", g.StartParams(configurationOverride=""), self.begin_start, self.end_start
            )
            if target is State.ENABLED:
                await self._transition("enable", NoParams(), self.begin_enable, self.end_enable)
        except BaseException as exc:
            if self.done.is_set() and isinstance(exc, ExpectedError):
                self.log.warning("stopped while starting", state=self.state.name)
                return
            self.log.error("not started", wanted=target.name, reached=self.state.name,
                           error=str(exc))  # fmt: skip
            # OFFLINE, whichever comes last: this, or the connection's first report.
            self.lifecycle.restore(State.OFFLINE)
            await self.report.summary_state()
            await self.close()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop everything this CSC started; the last will is not sent (clean exit)."""
        await self.unfollow()
        await self.jobs.cancel("closing")
        await cancel_and_wait(self._background, self.log, "closing")
        await self.commands.close()
        self._background = []
        if self._bus is not None:
            await self._bus.close()
            self._bus = None

    async def run(self) -> None:
        """Run until ``exitControl`` or :meth:`stop`."""
        async with self:
            await self.done.wait()
            # exitControl's own ack (and any other in flight) must go out before we close.
            await self.commands.wait_others(_ACK_WAIT)

    async def stop(self, reason: str) -> None:
        """Leave at once (SIGTERM, Ctrl-C): tell monitors OFFLINE, then let :meth:`run`
        return. Unlike a crash, this is not ``lost``. A second signal while stopping (a
        terminal sends SIGINT, a supervisor then SIGTERM) changes nothing."""
        if self.done.is_set() or self._bus is None:
            self.done.set()
            return
        self.log.warning("stopping", reason=reason, state=self.state.name)
        await self.publish_event(
            g.SUMMARY_STATE,
            g.SummaryState(summaryState=int(State.OFFLINE), name=State.OFFLINE.name),
            wait=2.0,
        )
        self.done.set()

    # ---- listening to other CSCs -------------------------------------------------------

    async def follow(
        self,
        address: CscAddress,
        spec: EventSpec[P] | TelemetrySpec[P],
        handler: Callable[[Parsed[P]], None],
    ) -> None:
        """Hear ``address``'s ``spec`` messages, each validated against its declaration,
        until :meth:`unfollow`; a malformed one is logged with the reason and skipped."""
        await self._followers.parsed(self.bus, address, spec, handler)

    async def follow_events(self, address: CscAddress, *listeners: Listener[Any]) -> None:
        """Hear several of ``address``'s events (each paired with its handler by
        :func:`~cscs.core.follow.on`), validated, in the order they were published."""
        await self._followers.events(self.bus, address, listeners)

    async def follow_topic(self, topic: str, handler: Callable[[Received], None]) -> None:
        """Hear messages on ``topic`` (MQTT wildcards allowed), JSON-decoded but not
        validated, until :meth:`unfollow`; undecodable ones are logged and skipped."""
        await self._followers.raw(self.bus, topic, handler)

    async def unfollow(self) -> None:
        """Stop hearing everything :meth:`follow` and :meth:`follow_topic` subscribed to."""
        await self._followers.close(self._bus)

    # ---- publishing --------------------------------------------------------------------

    async def publish_event(
        self, spec: EventSpec[Payload], payload: Payload, *, wait: float = 30.0
    ) -> bool:
        """Publish a declared event; retained ones are republished after a reconnect."""
        topic, data = self._publisher.event(spec, payload)
        return await self.bus.publish(
            topic, data, qos=spec.qos, retain=spec.retained, wait=wait if spec.qos else 0.0
        )

    async def publish_telemetry(self, spec: TelemetrySpec[Payload], payload: Payload) -> bool:
        """Publish declared telemetry (QoS 0: dropped, not queued, while disconnected)."""
        topic, data = self._publisher.telemetry(spec, payload)
        return await self.bus.publish(topic, data, qos=0, wait=0.0)

    async def _send_ack(self, ack: Ack) -> None:
        wire = ack.to_wire() | {"sent_tai": current_tai()}
        if not await self.bus.publish(self.address.ack, encode(wire), qos=1, wait=_ACK_WAIT):
            self.log.warning("could not deliver ack", command=ack.command, ack=ack.code.name)

    async def _on_connect(self) -> None:
        """Until the generic events have all gone out once: those. Then, after each
        reconnection: every retained event again (the broker may have lost them), as
        first published. Which it is must not be guessed from what was published: a
        component may publish a retained event of its own before this hook runs."""
        if not self._initial_published:
            await self.report.initial()  # if the connection drops meanwhile: again, next time
            self._initial_published = True
            return
        for topic, data in self._publisher.retained():
            await self.bus.publish(topic, data, qos=1, retain=True)

    # ---- commands ----------------------------------------------------------------------

    def _triage(self, message: Message) -> Dropped | Ack | CommandRequest:
        return triage(
            message, self.interface, address=self.address, state=self.state, auth=self.auth,
            own_identity=self.identity,
        )  # fmt: skip

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

    # ---- the life cycle ----------------------------------------------------------------

    async def _transition(
        self,
        command: str,
        params: Payload,
        begin: Callable[[Any], Awaitable[None]],
        end: Callable[[Any], Awaitable[None]],
    ) -> None:
        assert command in LIFECYCLE_COMMANDS
        async with self._transition_lock:
            self._check_allowed(command)
            old = self.state
            await begin(params)  # failing here leaves the state as it was
            self._check_allowed(command)  # stopped (SIGTERM) meanwhile: the state stays
            new = self.lifecycle.apply(command)
            try:
                await end(params)
            except BaseException:
                self.lifecycle.restore(old)
                raise
            await self._state_changed(old, new)

    def _check_allowed(self, command: str) -> None:
        if self.done.is_set():  # stopped, or exited
            raise ExpectedError(f"{command} not allowed: {self.address} is stopping")
        refusal = self.lifecycle.refusal(command)
        if refusal:
            raise ExpectedError(refusal)

    async def _state_changed(self, old: State, new: State) -> None:
        self.log.info("summary state changed", old=old.name, new=new.name)
        if old is State.ENABLED:
            self.commands.abort_enabled_only(f"aborted: {self.address} left ENABLED for {new.name}")
        await self.state_changed(old, new)
        if not self.done.is_set():  # stopped (SIGTERM): OFFLINE, said then, is the last word
            await self.report.summary_state()
        if new is State.OFFLINE:
            self.done.set()

    async def fault(self, code: int, report: str, tb: str = "") -> None:
        """Go to FAULT by itself: publish ``errorCode``, then ``summaryState`` (ICD §3).
        Where FAULT cannot be entered (STANDBY, FAULT already), the ``errorCode`` alone
        says what went wrong."""
        self.log.error("going to FAULT", errorCode=code, report=report, state=self.state.name)
        await self.report_error(code, report, tb)
        if self.lifecycle.allows("fault"):
            old = self.state
            self.lifecycle.fault()
            await self._state_changed(old, State.FAULT)

    async def report_error(self, code: int, report: str, tb: str = "") -> None:
        """Publish ``errorCode`` without leaving the state: a trouble the CSC rides out
        for now, which the night staff should see (FAULT may follow)."""
        error = g.ErrorCode(errorCode=code, errorReport=report, traceback=tb)
        await self.publish_event(g.ERROR_CODE, error)

    async def fault_from_exception(self, code: int, report: str, exc: BaseException) -> None:
        await self.fault(code, f"{report}: {exc!r}", "".join(traceback.format_exception(exc)))

    # ---- supervision (cscs.core.tasks) -------------------------------------------------

    def keep_running(self, loop: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``loop()`` for as long as the CSC runs: restarted after a back-off if it
        fails (or returns), each failure reported by :meth:`task_failed`."""
        task = keep_running(loop, name, self.log, self.task_failed)
        self._background.append(asyncio.create_task(task, name=f"{self.address}-{name}"))

    def report_failure(self, name: str, exc: BaseException) -> None:
        """:meth:`task_failed`, from code that cannot await (a callback, or a thread's
        report handed to the event loop)."""
        self.jobs.spawn(self.task_failed(name, exc), f"{name}-failed")

    async def task_failed(self, name: str, exc: BaseException) -> None:
        """A part of this CSC failed in a way nobody planned for (a bug, or a broken peer
        nobody foresaw): ``errorCode`` 1001 with the traceback, and FAULT."""
        await self.fault_from_exception(g.ERROR_TASK_FAILED, f"{name} failed unexpectedly", exc)

    # ---- generic commands that keep the state ------------------------------------------

    async def _set_log_level(self, params: g.SetLogLevelParams, _: CommandContext) -> str:
        if not 0 <= params.level <= logging.CRITICAL:
            raise ExpectedError(f"level must be 0-50 (Python logging levels), got {params.level}")
        self.log_level = params.level
        await self.report.log_level()
        return f"log level {params.level}"

    async def _set_auth_list(self, params: g.SetAuthListParams, _: CommandContext) -> None:
        self.auth = self.auth.edited(params.authorizedUsers, params.nonAuthorizedCSCs)
        await self.report.auth_list()
