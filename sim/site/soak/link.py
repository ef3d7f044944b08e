"""A TCP relay that can be cut: the soak night's way to sever one process's network link.

Stopping the broker cuts everyone at once; the fault here is narrower ("the OCS-side link
of the Telemetry Gateway cut"): that process alone is pointed at a :class:`LinkCutter`,
whose ``cut()`` drops its connections and refuses new ones, as a pulled cable would.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from cscs.core.broker import free_port

_CHUNK = 64 * 1024
Writer = asyncio.StreamWriter
_log = structlog.get_logger("link")


class LinkCutter:
    """A TCP relay from ``host:port`` to the upstream ``upstream_host:upstream_port``
    that can be cut: one process connects through it, everyone else goes direct, so
    that process alone loses its link to the broker. An async context manager."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:  # fmt: skip
        self._upstream = (upstream_host, upstream_port)
        self._host = host
        self._port = port if port is not None else free_port(host)
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._cut = False
        self.connections = 0  # relayed so far

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self._host}:{self._port}"

    @property
    def cut_now(self) -> bool:  # between cut() and restore()
        return self._cut

    async def start(self) -> LinkCutter:
        """Listen (again, on the same port) and relay each new connection."""
        self._cut = False
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accepted, self._host, self._port, reuse_address=True
            )
        return self

    async def cut(self) -> None:
        """Stop listening (a reconnect is refused) and abort every relayed connection."""
        self._cut = True
        server, self._server = self._server, None
        if server is not None:
            server.close()  # the listening socket goes at once
        relays = list(self._relays)
        for relay in relays:
            relay.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        await self.start()  # on the same port

    async def close(self) -> None:
        await self.cut()

    async def __aenter__(self) -> LinkCutter:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _accepted(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        # A plain callback, not a coroutine: the relay task is known to cut() at once.
        if self._cut:
            writer.transport.abort()
            return
        self.connections += 1
        relay = asyncio.create_task(self._relay(reader, writer), name=f"link-{self._port}")
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        ends = [writer]
        try:
            try:
                up_reader, upstream = await asyncio.open_connection(*self._upstream)
            except OSError as exc:
                host, port = self._upstream
                _log.warning("upstream unreachable; dropping the client",
                             upstream=f"{host}:{port}", error=str(exc))  # fmt: skip
                return
            ends.append(upstream)
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(_pump(reader, upstream, writer), name="link-up")
                pumps.create_task(_pump(up_reader, writer, upstream), name="link-down")
            for end in ends:  # both ways at an end: what is still buffered goes, then FIN
                end.close()
            for end in ends:
                with contextlib.suppress(OSError):
                    await end.wait_closed()
        finally:  # cut or refused: abortive, a cut link says nothing more to either side
            for end in ends:
                end.transport.abort()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, back: Writer) -> None:
    """Copy until end of file (passed on as a half-close); on an error, drop both ends."""
    try:
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()  # bounded: the reader is paused while the sink is full
        if sink.can_write_eof() and not sink.transport.is_closing():
            with contextlib.suppress(OSError):
                sink.write_eof()
    except OSError:  # reset, broken pipe
        sink.transport.abort()
        back.transport.abort()
