"""``cscs dashboard``: the page the night staff keep open, served by aiohttp.

The server listens to the bus as a monitor, keeps :class:`NightModel`, and pushes what
changed to every open page over server-sent events (the browser reconnects by itself
and gets a fresh snapshot). Nothing is polled and nothing is built: the page is three
static files shipped in the package. With ``allow_commands`` the page can acknowledge,
mute and unmute the gateway's alarms; the answers are the gateway's own acks.

A page that cannot keep up (a laptop asleep) has its stream closed rather than letting
its queue grow (``PageStreams``: bytes per page and pages are bounded); it reconnects to
a snapshot when it wakes. What changed is pushed at most every ``_FLUSH_INTERVAL``, all
of a burst together, and an alarm that changed is pushed alone, not the whole listing:
a flood on the bus costs the pages a bounded rate of frames.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from cscs.camera.geometry import camera_for_index
from cscs.core.config import ConfigSource
from cscs.core.errors import ConfigurationError
from cscs.core.remote import AckError, CommandTimeoutError, Received, Remote
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress, parse_topic
from cscs.core.transport import Message, Subscription, Transport
from cscs.dashboard.access import COOKIE, host_allowed, origin_allowed, token_matches
from cscs.dashboard.checks import ArchivedFile, ImageCheck, check_image, path_in_archive
from cscs.dashboard.model import NightModel
from cscs.dashboard.streams import PageStreams, TooManyPagesError
from cscs.dashboard.thresholds import threshold_rules

__all__ = ["Dashboard", "DashboardOptions"]

STATIC = Path(__file__).parent / "static"
_BYTES_PER_PAGE = 4 * 2**20  # a page this far behind has its stream closed
_MAX_PAGES = 20  # pages open at once: every stream's queue together stays under 80 MiB
_FLUSH_INTERVAL = 0.2  # s: changes are pushed at most this often, a burst together
# Bytes of one bus message the page reads at all: the largest it shows (the gateway's
# listing of its alarms, OCS Batch's of its jobs) is well under; a bigger one is a
# peer's mistake or an attack, counted and dropped before it is parsed.
_MAX_MESSAGE = 2**20
_STATIC_NAMES = frozenset(path.name for path in STATIC.iterdir())  # what /static/ serves
_PREVIEWS_KEPT = 32
_CHECKS_WAITING = 256  # images waiting to be re-read; beyond, the oldest is skipped
_COMMANDS = {"acknowledge", "mute", "unmute"}
_SECURITY_HEADERS = {
    # No inline script or style, nothing from elsewhere: a name with HTML in it can
    # never run, even if some code of ours forgot to treat it as text.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class DashboardOptions:
    prefix: str
    archive_root: Path
    gateway_config: ConfigSource
    token: str | None = None
    allow_commands: bool = False
    identity: str = "dashboard"
    hosts: tuple[str, ...] = ()
    """Host names the page may be asked for besides localhost and loopback addresses
    (checked when there is no token: DNS rebinding)"""


class Dashboard:
    def __init__(self, bus: Transport, options: DashboardOptions) -> None:
        self.bus = bus
        self.options = options
        self.model = NightModel()
        self.log = structlog.get_logger("dashboard")
        self.thresholds = threshold_rules(options.gateway_config)
        self._gateway_applied = ""
        self.streams = PageStreams(_BYTES_PER_PAGE, _MAX_PAGES)
        self._flush_scheduled = False
        self._flushed_at = 0.0  # loop time
        self._previews: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._checks: collections.deque[str] = collections.deque()
        self._check_waiting = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[Subscription] = []
        self._gateway: Remote | None = None

    # ---- life ------------------------------------------------------------------------

    async def start(self) -> None:
        prefix = self.options.prefix
        for topic in (f"{prefix}/+/+/evt/#", f"{prefix}/+/+/tel/archiverStatus"):
            subscription = await self.bus.subscribe(topic, maxsize=100_000)
            self._subscriptions.append(subscription)
            self._tasks.append(asyncio.create_task(self._listen(subscription), name=topic))
        self._tasks.append(asyncio.create_task(self._tick(), name="dashboard-tick"))
        self._tasks.append(asyncio.create_task(self._check_images(), name="dashboard-checks"))
        if self.options.allow_commands:
            self._gateway = Remote(
                self.bus, CscAddress("TelemetryGateway", 0, prefix), identity=self.options.identity
            )
            await self._gateway.__aenter__()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for subscription in self._subscriptions:
            self.bus.unsubscribe(subscription)
        if self._gateway is not None:
            await self._gateway.__aexit__(None, None, None)
        self.streams.end_all()

    # ---- the bus ---------------------------------------------------------------------

    async def _listen(self, subscription: Subscription) -> None:
        async for message in subscription:
            try:
                self._heard(message)
            except Exception:  # a bug on one message must not end the page's listening
                self.log.exception(
                    "a message could not be shown; dropped", topic=message.topic[:200]
                )

    def _heard(self, message: Message) -> None:
        if len(message.payload) > _MAX_MESSAGE:
            self.model.malformed += 1
            self.log.warning("a message too big to show; dropped unread",
                             topic=message.topic[:200], size=len(message.payload))  # fmt: skip
            return
        if not message.payload:
            parsed = parse_topic(message.topic)
            if parsed is not None:
                self.model.cleared(parsed.address, parsed.name)
                self._schedule_flush()
            return
        received = Received.from_message(message)
        if received is None:
            self.model.malformed += 1
            return
        self.model.feed(received, time.monotonic(), current_tai())
        if (received.address.name, received.name) == ("TelemetryGateway", "configurationApplied"):
            self._follow_gateway_config(received.data.get("configurations"))
        for name in self.model.just_changed:
            row = self.model.images.get(name)
            if row is not None and row.complete and not row.checking:
                row.checking = True
                self._checks.append(name)
                while len(self._checks) > _CHECKS_WAITING:
                    self._checks.popleft()  # behind: the newest images matter most
                self._check_waiting.set()
        self._schedule_flush()

    def _follow_gateway_config(self, applied: object) -> None:
        if not isinstance(applied, str) or applied == self._gateway_applied:
            return
        self._gateway_applied = applied[:1000]
        try:
            self.thresholds = threshold_rules(self.options.gateway_config, self._gateway_applied)
        except ConfigurationError as exc:
            self.log.warning("kept the thresholds: the gateway's configuration cannot be read",
                             error=str(exc))  # fmt: skip
            return
        self._broadcast("thresholds", self.thresholds)

    async def _tick(self) -> None:
        """Each second: heartbeat ages move, and the page learns the time (TAI)."""
        while True:
            self.streams.drop_departed()
            if len(self.streams):  # no page, no work: nothing is built for nobody
                self._broadcast("cscs", self.model.cscs_view(time.monotonic()))
                self._broadcast("tick", {"tai": current_tai()})
            await asyncio.sleep(1.0)

    async def _check_images(self) -> None:
        while True:
            await self._check_waiting.wait()
            if not self._checks:
                self._check_waiting.clear()
                continue
            name = self._checks.pop()  # the newest first: what the staff look at now
            row = self.model.images.get(name)
            if row is None:
                continue
            files = {
                sensor: ArchivedFile(sensor, path, f["byteSize"], f["checkSum"], f["algorithm"])
                for sensor, f in row.files.items()
                if (path := path_in_archive(f["url"], self.options.archive_root)) is not None
            }
            outside = {s: "not in the archive this page shows" for s in row.files if s not in files}
            try:
                camera = camera_for_index(row.camera_index)
                result = await asyncio.to_thread(check_image, files, camera)
            except Exception as exc:
                self.log.exception("could not check an image's files", image=name)
                result = ImageCheck({s: f"not checked: {exc}"[:300] for s in files}, {}, None)
            if result.preview is not None:
                self._previews[name] = result.preview.png
                while len(self._previews) > _PREVIEWS_KEPT:
                    self._previews.popitem(last=False)
            self.model.note_checked(name, result.problems | outside, result.header,
                                    result.preview is not None)  # fmt: skip
            self._schedule_flush()

    # ---- pushing ---------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Push what changed once this burst of messages is handled, and not sooner
        than ``_FLUSH_INTERVAL`` after the last push."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = asyncio.get_running_loop()
            wait = self._flushed_at + _FLUSH_INTERVAL - loop.time()
            loop.call_later(max(0.0, wait), self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._flushed_at = asyncio.get_running_loop().time()
        alarms = self.model.take_alarm_changes()  # before take_changes: it reads sections
        sections, rows, logs = self.model.take_changes()
        if not len(self.streams):
            return  # nobody to tell: a page that connects later gets a snapshot
        for name, alarm in alarms.items():
            self._broadcast("alarm", {"name": name, "alarm": alarm})
        if "cscs" in sections:
            self._broadcast("cscs", self.model.cscs_view(time.monotonic()))
        if "camera" in sections:
            self._broadcast("camera", self.model.camera_view())
        if "alarms" in sections:
            self._broadcast("alarms", self.model.alarms_view())
        if "jobs" in sections:
            self._broadcast("jobs", self.model.jobs)
        for row in rows:
            self._broadcast("image", row.view())
        for entry in logs:
            self._broadcast("log", entry)

    def snapshot(self) -> dict[str, Any]:
        return {
            "tai": current_tai(), "prefix": self.options.prefix,
            "commands": self.options.allow_commands, "thresholds": self.thresholds,
            "cscs": self.model.cscs_view(time.monotonic()), "camera": self.model.camera_view(),
            "images": [row.view() for row in self.model.images.values()],
            "alarms": self.model.alarms_view(), "jobs": self.model.jobs,
            "logs": list(self.model.logs),
        }  # fmt: skip

    def _broadcast(self, event: str, data: Any) -> None:
        if len(self.streams):
            self.streams.broadcast(_sse(event, data))

    # ---- HTTP ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=16 * 1024)
        app.on_response_prepare.append(_secure)  # every response: errors and the stream too
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/events", self._events)
        app.router.add_get("/preview/{image}.png", self._preview)
        app.router.add_post("/api/{command}", self._command)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = self.options.token
        # Without a token the page is open to whoever reaches it on loopback: a site
        # whose name resolves to 127.0.0.1 (DNS rebinding) would be "same origin". It
        # asks with its own name in Host: refused.
        if token is None and not host_allowed(request.headers.get("Host"), self.options.hosts):
            raise web.HTTPMisdirectedRequest(
                text="this dashboard answers only to localhost, a loopback address or the "
                "names it was given (--host-name)"
            )
        given = request.cookies.get(COOKIE) or request.query.get("token")
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            given = bearer[7:]
        if not token_matches(token, given):
            raise web.HTTPUnauthorized(
                text="this dashboard needs its token: open it once as /?token=…"
            )
        if token is not None and "token" in request.query:  # keep it out of the address bar
            # Always to the page itself: a path taken from the request can be made to
            # read as //elsewhere (a tab or a backslash, which browsers drop or turn).
            redirect = web.HTTPSeeOther("/")
            redirect.set_cookie(COOKIE, token, httponly=True, samesite="Strict",
                                secure=request.secure)  # fmt: skip
            raise redirect
        response: web.StreamResponse = await handler(request)
        return response

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC_NAMES:
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if len(self.streams) >= self.streams.max_pages:
            raise web.HTTPServiceUnavailable(
                text=f"{self.streams.max_pages} pages are open on this dashboard already"
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            queue = self.streams.open(_sse("snapshot", self.snapshot()))
        except TooManyPagesError:  # taken while this one was being prepared
            return response
        transport, writer = request.transport, asyncio.current_task()

        def drop() -> None:  # behind, or gone: the connection and its writer end too
            if transport is not None:
                transport.abort()
            if writer is not None:
                writer.cancel()

        queue.on_drop = drop
        queue.connected = lambda: transport is not None and not transport.is_closing()
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            async for frame in self.streams.frames(queue):
                await response.write(frame)
        return response

    async def _preview(self, request: web.Request) -> web.StreamResponse:
        png = self._previews.get(request.match_info["image"])
        if png is None:
            raise web.HTTPNotFound(text="no preview (yet) of this image")
        return web.Response(body=png, content_type="image/png")

    async def _command(self, request: web.Request) -> web.StreamResponse:
        command = request.match_info["command"]
        if self._gateway is None:
            raise web.HTTPForbidden(text="this dashboard was started without --allow-commands")
        if command not in _COMMANDS:
            raise web.HTTPNotFound(text=f"no command {command[:40]!r}")
        # A form or an image on another site cannot set this header: no cross-site requests.
        if request.headers.get("X-Dashboard") != "1":
            raise web.HTTPForbidden(text="commands come from the dashboard's own page")
        if not origin_allowed(request.headers.get("Origin"), request.headers.get("Host")):
            raise web.HTTPForbidden(text="commands come from the dashboard's own page (Origin)")
        try:
            params = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body is not JSON") from None
        if not isinstance(params, dict):
            raise web.HTTPBadRequest(text="the body is not a JSON object")
        who = {"acknowledge": "acknowledgedBy", "mute": "mutedBy"}.get(command)
        if who is not None:
            params[who] = self.options.identity
        # A row's button acts on that alarm alone, whatever its name (`*` is a name an
        # alarm forged on the bus can have): a glob only when asked for in so many words.
        params["exact"] = params.get("glob") is not True
        params.pop("glob", None)
        try:
            ack = await self._gateway.command(command, params, timeout=10.0)
        except AckError as exc:
            return web.json_response(
                {"ok": False, "ack": exc.ack.code.name, "result": exc.ack.result}
            )
        except CommandTimeoutError as exc:
            return web.json_response({"ok": False, "ack": "NOACK", "result": str(exc)})
        return web.json_response({"ok": True, "ack": ack.code.name, "result": ack.result})


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_SECURITY_HEADERS)


def _sse(event: str, data: Any) -> bytes:
    try:
        text = json.dumps(data, allow_nan=False, default=str)
    except ValueError:  # a NaN or an infinity from the bus: JSON has no word for them
        text = json.dumps(_finite(data), default=str)
    return f"event: {event}\ndata: {text}\n\n".encode()


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data
