"""The simulated DAQ's pixel server: the store, served over ZeroMQ (``docs/daq-protocol.md``).

The server runs on a thread of its own, with its own event loop (ADR 0011): whatever
its clients do — a flood of connections, requests nobody reads, malformed messages —
costs that thread, never the event loop of the CSC that owns it, so the camera's
heartbeat and commands keep their pace. What it holds for clients is bounded
(:mod:`sim.daq.limits`); every message is answered or dropped on its own
(:mod:`sim.daq.serving`); and if the serving loop itself dies (a bug), the failure is
logged with its traceback, handed to ``on_failure`` on the owner's loop (the camera
reports it: ``errorCode`` and FAULT), and the loop is started again.

The owner's side is unchanged: ``async with DaqServer(store, endpoints) as server``
starts it, ``await server.close()`` stops it and waits for the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import zmq
import zmq.asyncio
from structlog.typing import FilteringBoundLogger

from cscs.camera.memory import release_freed_memory
from cscs.core.backoff import Backoff
from cscs.core.tasks import keep_running
from sim.daq.faults import FaultPlan
from sim.daq.limits import Ledger, Load, RateLimitedLog, ServerLimits
from sim.daq.serving import Serving, Stats
from sim.daq.store import DaqStore

__all__ = ["DaqServer", "ServerLimits"]

_STOP_TIMEOUT = 10.0  # s close() waits for the thread
_OWNER_TIMEOUT = 10.0  # s a read waits for the owner's loop to run something for it
_HOUSEKEEPING_INTERVAL = 0.2  # s between sweeps of the ledger
# After this many connections have closed, give the allocator's free memory back: a
# flood's connection state (ADR 0011). Normal clients connect once and stay.
_TRIM_AFTER_DISCONNECTS = 256
_CONNECTION_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


def _refuse_live_ipc(endpoint: str) -> None:
    """ZeroMQ binds an ``ipc://`` path by replacing whatever is there, which would
    silently steal a running server's clients; refuse a path something listens on."""
    if not endpoint.startswith("ipc://"):
        return
    path = endpoint.removeprefix("ipc://")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return  # nothing there, or a stale file ZeroMQ may replace
    finally:
        probe.close()
    raise zmq.ZMQError(errno.EADDRINUSE, "another process is listening on this path")


def _resolve(future: concurrent.futures.Future[None], exc: BaseException | None = None) -> None:
    """Settle a future another thread may have cancelled meanwhile."""
    if future.done():
        return
    try:
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)
    except concurrent.futures.InvalidStateError:
        pass


class DaqServer:
    """Serve ``store`` on ``endpoints`` (``tcp://host:port``, ``tcp://127.0.0.1:*``,
    ``ipc:///path``) until closed.

    ``on_failure(exc)`` is called on the event loop that entered the server when its
    serving loop dies unexpectedly (it is restarted either way). ``log``: the owner's
    logger; the server's lines are handed to the owner's loop for it (rate-limited), or
    go to structlog's default logger without one. The socket is bound here, so a taken
    endpoint fails at construction.
    """

    def __init__(
        self,
        store: DaqStore,
        endpoints: list[str],
        faults: FaultPlan | None = None,
        context: zmq.Context[Any] | None = None,
        *,
        on_failure: Callable[[BaseException], None] | None = None,
        limits: ServerLimits | None = None,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self.store = store
        self.faults = faults or FaultPlan()
        self.limits = limits or ServerLimits()
        self.stats = Stats()
        self._on_failure = on_failure
        self._log = log
        self._default_log: FilteringBoundLogger = structlog.get_logger("daq-server")
        # A context of its own: its I/O thread carries the DAQ's traffic only.
        self._owns_context = context is None
        self._context: zmq.Context[Any] = context if context is not None else zmq.Context()
        self._socket = zmq.asyncio.Socket(self._context, zmq.ROUTER)
        for option, value in (
            (zmq.LINGER, 0),
            (zmq.ROUTER_MANDATORY, 1),  # a reply that cannot be queued fails: we count it
            (zmq.SNDHWM, self.limits.send_hwm),
            (zmq.RCVHWM, self.limits.receive_hwm),
            (zmq.MAXMSGSIZE, self.limits.max_frame_bytes),
        ):
            self._socket.setsockopt(option, value)
        # Connections come and go below the messages; a monitor says when (to trim).
        monitor = f"inproc://daq-server-monitor-{id(self):x}"
        self._socket.monitor(monitor, _CONNECTION_EVENTS)
        self._monitor = zmq.asyncio.Socket(self._context, zmq.PAIR)
        self._monitor.setsockopt(zmq.LINGER, 0)
        self._monitor.connect(monitor)
        self.endpoints: list[str] = []
        try:
            for endpoint in endpoints:
                _refuse_live_ipc(endpoint)
                self._socket.bind(endpoint)
                last = self._socket.getsockopt(zmq.LAST_ENDPOINT)
                assert isinstance(last, bytes)
                self.endpoints.append(last.decode())
        except zmq.ZMQError as exc:
            self._close_socket()
            raise OSError(f"DAQ server cannot bind {endpoint}: {exc}") from exc
        self._ledger = Ledger(self.limits)
        self._owner: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the server thread's
        self._stop: asyncio.Event | None = None
        self._serving: Serving | None = None
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._closed = False

    # ---- the owner's side --------------------------------------------------------------

    async def __aenter__(self) -> DaqServer:
        if self._thread is not None or self._closed:
            raise RuntimeError("a DaqServer is started once")
        self._owner = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._thread_main, name="daq-server", daemon=True)
        self._thread.start()
        try:
            await asyncio.shield(asyncio.wrap_future(self._started))
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop serving, cancel reads in flight, close the socket, end the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            self._close_socket()
            return
        # Until the thread has started, it has nothing to be told to stop with.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_STOP_TIMEOUT):
                await asyncio.shield(asyncio.wrap_future(self._started))
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has already ended
                loop.call_soon_threadsafe(stop.set)
        try:
            async with asyncio.timeout(_STOP_TIMEOUT):
                await asyncio.shield(asyncio.wrap_future(self._finished))
        except TimeoutError:
            self._owner_log().error("the DAQ server thread did not stop; left running")
            return
        self._thread.join()  # it has finished: only its last instructions are left

    def load(self) -> Load:
        """What is in flight now (read from any thread)."""
        return self._ledger.load()

    async def wait_idle(self) -> None:
        """Return once nothing is in flight (bound the wait with ``asyncio.timeout``)."""
        loop, serving = self._loop, self._serving
        if loop is None or serving is None:
            raise RuntimeError("the DaqServer is not running")
        here = asyncio.get_running_loop()
        idle: asyncio.Future[None] = here.create_future()

        def settle() -> None:
            if not idle.done():
                idle.set_result(None)

        def wake() -> None:  # on the server's loop
            with contextlib.suppress(RuntimeError):  # the waiter's loop is gone
                here.call_soon_threadsafe(settle)

        loop.call_soon_threadsafe(serving.when_idle, wake)
        await idle

    # ---- the server's thread -----------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # a bug outside the supervised loops: say so
            self._emit("error", "the DAQ server thread failed", exc_info=exc)
            self._report(exc)
            _resolve(self._started, exc)
        finally:
            self._close_socket()
            loop.close()
            _resolve(self._finished)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        serving = Serving(
            self._socket,
            self.store,
            self.faults,
            self._ledger,
            self.stats,
            RateLimitedLog(self._emit),
            self._on_owner,
        )
        self._serving = serving
        supervised = [
            asyncio.create_task(self._supervise("serving", serving.run)),
            asyncio.create_task(
                self._supervise("housekeeping", functools.partial(self._housekeeping, serving))
            ),
            asyncio.create_task(self._supervise("connection monitor", self._watch_connections)),
        ]
        _resolve(self._started)
        try:
            await self._stop.wait()
        finally:
            for task in supervised:
                task.cancel()
            await asyncio.gather(*supervised, return_exceptions=True)
            await serving.close()
            self._close_socket()  # while its loop runs: it unregisters from it

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run()`` until cancelled, as every CSC runs its loops (``keep_running``): a
        failure (or a return) logged with its traceback, reported to the owner, and the
        loop started again after a back-off."""

        async def failed(_: str, failure: BaseException) -> None:
            self.stats.serve_failures += 1
            self._report(failure)

        fast = Backoff(initial=0.05, maximum=5.0)
        await keep_running(run, f"the DAQ server's {name}", _HandedOff(self._emit), failed, fast)

    async def _housekeeping(self, serving: Serving) -> None:
        trimmed_at = self.stats.connections_closed
        while True:
            await asyncio.sleep(_HOUSEKEEPING_INTERVAL)
            serving.tidy()
            if self.stats.connections_closed - trimmed_at >= _TRIM_AFTER_DISCONNECTS:
                trimmed_at = self.stats.connections_closed
                if release_freed_memory():
                    self.stats.memory_trims += 1

    async def _watch_connections(self) -> None:
        while True:
            frames = await self._monitor.recv_multipart()
            (event,) = struct.unpack_from("=H", frames[0])
            if event == zmq.EVENT_ACCEPTED:
                self.stats.connections_accepted += 1
            elif event == zmq.EVENT_DISCONNECTED:
                self.stats.connections_closed += 1

    def _close_socket(self) -> None:
        if not self._socket.closed:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._socket.close(linger=0)
            if self._owns_context:
                self._context.term()

    # ---- between the two loops ---------------------------------------------------------

    def _call_owner(self, function: Callable[[], None]) -> bool:
        """Schedule ``function`` on the owner's loop; False if there is none any more."""
        owner = self._owner
        if owner is None or owner.is_closed():
            return False
        try:
            owner.call_soon_threadsafe(function)
        except RuntimeError:
            return False  # closed meanwhile
        return True

    async def _on_owner(self, function: Callable[[], None]) -> None:
        """Run ``function`` on the owner's loop and wait for it (here if it has none)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                function()
            except BaseException as exc:
                _resolve(done, exc)
            else:
                _resolve(done)

        if not self._call_owner(run):
            function()
            return
        async with asyncio.timeout(_OWNER_TIMEOUT):
            await asyncio.wrap_future(done)

    def _report(self, exc: BaseException) -> None:
        def failed() -> None:
            if self._on_failure is None:
                return
            try:
                self._on_failure(exc)
            except Exception as error:
                self._owner_log().error("reporting a DAQ server failure failed", exc_info=error)

        self._call_owner(failed)

    def _emit(self, level: str, event: str, **fields: Any) -> None:
        """Log from the server's thread: through the owner's logger on its loop (it is
        not thread-safe), else structlog's default (which is)."""
        if self._log is not None:
            line = functools.partial(getattr(self._log, level), event, **fields)
            if self._call_owner(line):
                return
        getattr(self._default_log, level)(event, **fields)

    def _owner_log(self) -> FilteringBoundLogger:
        return self._log if self._log is not None else self._default_log


class _HandedOff:
    """A logger for :func:`keep_running` whose lines go through :meth:`DaqServer._emit`
    (to the owner's logger, on the owner's loop)."""

    def __init__(self, emit: Callable[..., None]) -> None:
        self._emit = emit

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, **fields)
