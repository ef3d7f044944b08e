"""The link cutter (sim.site.soak.link): a relay that carries bytes both ways, cuts every
connection at once and refuses new ones while cut, and relays again once restored, on
the same port; through it a bus rides out the cut while the others keep their link."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from cscs.core.broker import EmbeddedBroker, find_mosquitto, free_port
from cscs.core.broker_address import BrokerAddress
from sim.site.soak.link import LinkCutter


@pytest_asyncio.fixture
async def echo_port() -> AsyncIterator[int]:
    """A plain asyncio echo server, the relay's upstream: its port."""
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass  # the relay reset us: that is what a cut does
        finally:
            writer.close()

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.create_task(serve(reader, writer), name="echo")
        handlers.add(handler)
        handler.add_done_callback(handlers.discard)

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    running = list(handlers)
    for handler in running:
        handler.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    await server.wait_closed()


async def rest_of(reader: asyncio.StreamReader) -> bytes:
    """What comes until the connection ends: an abortive close may end it with a reset."""
    try:
        async with asyncio.timeout(10):
            return await reader.read()
    except ConnectionResetError:
        return b""


async def round_trip(port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and read what comes back until end of file."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        writer.write_eof()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.transport.abort()


async def test_bytes_go_both_ways_through_the_relay(echo_port: int) -> None:
    """A megabyte goes out and comes back intact, end of file passed on both ways."""
    payload = os.urandom(1 << 20)
    async with LinkCutter("127.0.0.1", echo_port) as link:
        assert link.url == f"mqtt://127.0.0.1:{link.port}"
        assert await round_trip(link.port, payload) == payload
        assert await round_trip(link.port, b"again") == b"again"
        assert link.connections == 2


async def test_a_cut_drops_every_connection_and_refuses_new_ones(echo_port: int) -> None:
    async with LinkCutter("127.0.0.1", echo_port) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        try:
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
            await link.cut()
            assert link.cut_now
            assert await rest_of(reader) == b""
        finally:
            writer.transport.abort()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", link.port)


async def test_a_restored_link_relays_again_on_the_same_port(echo_port: int) -> None:
    async with LinkCutter("127.0.0.1", echo_port) as link:
        port = link.port
        assert await round_trip(port, b"before") == b"before"
        await link.cut()
        await link.restore()
        assert (link.port, link.cut_now) == (port, False)
        assert await round_trip(port, b"after") == b"after"
        assert link.connections == 2


async def test_an_unreachable_upstream_closes_the_client() -> None:
    """Nothing listens upstream: the client's connection is accepted, then dropped."""
    async with LinkCutter("127.0.0.1", free_port()) as link:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        try:
            writer.write(b"anyone?")
            assert await rest_of(reader) == b""
        finally:
            writer.transport.abort()
        assert link.connections == 1


@pytest.mark.broker
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
async def test_a_bus_through_the_relay_rides_out_a_cut(index: int) -> None:
    """A bus connected through the relay publishes to one connected directly; cut, the
    direct one keeps its link; restored, the relayed bus reconnects by itself."""
    connects = asyncio.Queue[None]()

    async def connected() -> None:
        connects.put_nowait(None)

    topic = f"link{index}"
    async with (
        EmbeddedBroker("mosquitto") as broker,
        LinkCutter(broker.host, broker.port) as link,
        broker.transport() as direct,
        direct.subscription(f"{topic}/#") as seen,
        BrokerAddress.from_url(link.url).transport(on_connect=connected) as relayed,
    ):
        await asyncio.wait_for(connects.get(), 10)
        assert await relayed.publish(f"{topic}/relayed", b"before")
        assert (await seen.get(10)).payload == b"before"

        await link.cut()
        assert await direct.publish(f"{topic}/direct", b"direct")  # the others keep theirs
        assert (await seen.get(10)).payload == b"direct"

        await link.restore()
        await asyncio.wait_for(connects.get(), 15)  # reconnected by itself
        assert relayed.connections == 2
        assert link.connections == 2
        assert await relayed.publish(f"{topic}/relayed", b"after")
        assert (await seen.get(10)).payload == b"after"
