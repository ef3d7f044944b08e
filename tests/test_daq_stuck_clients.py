"""Clients that ask and never read no longer hold the DAQ server's slots for ever (issue
29, item 16a): past ``stuck_after`` seconds with a reply unread, a client is *stuck*, its
work leaves the shared counts, and it is refused until it has read or gone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cscs.daq.client import DaqClient
from cscs.daq.errors import DaqError
from sim.daq.limits import Ledger, Load, ServerLimits
from sim.daq.server import DaqServer
from sim.daq.store import DaqStore
from tests.test_daq_hostile import IMAGE, SENSORS, FakeTracker, Flood, store

__all__ = ["store"]  # the module's fixture, used here


def clocked(limits: ServerLimits) -> tuple[Ledger, list[float]]:
    now = [0.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    return Ledger(limits, clock), now


def test_sixteen_clients_that_never_read_hold_the_slots_only_until_the_deadline() -> None:
    ledger, now = clocked(ServerLimits(clients=16, stuck_after=30.0))
    trackers = {}
    for n in range(16):
        peer = b"never-reads-%d" % n
        ledger.read_started(peer)
        trackers[peer] = FakeTracker()
        ledger.read_finished(peer, trackers[peer])  # on the socket, never taken off
    assert ledger.refuse_read(b"normal") == "at most 16 clients with work in flight"
    now[0] = 29.0
    assert ledger.refuse_read(b"normal") is not None  # not yet
    now[0] = 31.0
    ledger.sweep()  # the server's housekeeping
    assert ledger.refuse_read(b"normal") is None
    assert ledger.load() == Load(0, 0, 0, 0, 0, stuck_clients=16)
    refusal = ledger.refuse_read(b"never-reads-0")
    assert refusal is not None
    assert "still unread" in refusal
    assert ledger.refuse_reply(b"never-reads-0") == refusal
    trackers[b"never-reads-0"].done = True  # it read at last, or its connection closed
    assert ledger.refuse_read(b"never-reads-0") is None
    for tracker in trackers.values():
        tracker.done = True
    ledger.sweep()
    assert ledger.load().idle


def test_a_client_judged_stuck_keeps_its_read_being_prepared_counted_until_it_ends() -> None:
    ledger, now = clocked(ServerLimits(stuck_after=1.0, stuck_clients=1))
    slow, stuck = FakeTracker(), FakeTracker()
    ledger.reply_sent(b"a", stuck, 100)
    ledger.read_started(b"a")  # still being prepared when a is judged stuck
    now[0] = 2.0
    ledger.sweep()
    assert ledger.load() == Load(0, 1, 0, 0, 0, stuck_clients=1)
    ledger.read_finished(b"a", slow)
    assert ledger.load() == Load(0, 0, 0, 0, 0, stuck_clients=1)
    ledger.reply_sent(b"b", FakeTracker(), 1)
    now[0] = 4.0
    ledger.sweep()  # b is stuck too: one stuck client is remembered, the oldest forgotten
    assert ledger.load().stuck_clients == 1
    assert ledger.refuse_reply(b"a") is None
    assert ledger.refuse_reply(b"b") is not None


async def test_a_normal_client_reads_while_clients_that_never_read_stay_connected(
    store: DaqStore,
) -> None:
    limits = ServerLimits(clients=2, reads=16, stuck_after=0.5)
    async with DaqServer(store, ["tcp://127.0.0.1:*"], limits=limits) as server:
        flood = Flood(server.endpoints[0], limits.clients, 8)
        try:
            await asyncio.to_thread(flood.send)
            assert set(await asyncio.to_thread(flood.first_replies, 10.0)) == {"begin"}
            async with DaqClient(server.endpoints[0], timeout=10.0) as client:
                async with asyncio.timeout(10):
                    while True:  # busy until the flood's clients are judged stuck
                        try:
                            got = await client.read_sensor(IMAGE, SENSORS[1])
                        except DaqError as exc:
                            if exc.code != "busy":
                                raise
                            await asyncio.sleep(0.1)  # a client's back-off, not a sync
                            continue
                        break
            assert got.sensor == SENSORS[1]
            assert server.load().stuck_clients == limits.clients
        finally:
            await asyncio.to_thread(flood.close)
        async with asyncio.timeout(15):
            await server.wait_idle()  # gone: the stuck clients' queues are freed, forgotten
