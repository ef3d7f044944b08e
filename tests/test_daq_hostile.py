"""The DAQ server against hostile peers: malformed messages, a flood, its own failure.

What must hold whatever a client sends: every message is answered (or, where the
protocol says so, left silent), the server keeps serving, what it holds stays bounded,
the camera's event loop (here: the test's) keeps its pace, and a failure of the serving
loop itself is reported and followed by serving again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import resource
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cscs.core.generic import ERROR_TASK_FAILED
from cscs.core.settings import Settings
from cscs.core.testing import MemoryBroker, make_csc
from cscs.daq.client import DaqClient
from cscs.daq.protocol import MAGIC, MAX_ID, Read, RequestError, parse_reply, parse_request
from sim.daq.camera import CameraCsc
from sim.daq.limits import Ledger, Load, RateLimitedLog, ServerLimits
from sim.daq.server import DaqServer
from sim.daq.serving import Serving
from sim.daq.store import DaqStore, SensorData

IMAGE = "CC_O_20261121_000001"
SENSORS = ("R22_S00", "R22_S01")
PROBE = MAX_ID  # the id of the `list` sent after each fuzzed message


def stored(value: int) -> SensorData:
    """Pixels different in every segment and sensor (so a mix-up cannot pass)."""
    base = np.arange(2048 * 576, dtype=np.int32).reshape(2048, 576)
    return SensorData.from_segments([base + np.int32(1000 * value + n) for n in range(16)])


@pytest.fixture(scope="module")
def store() -> DaqStore:
    store = DaqStore(2 * 10**9)
    store.begin_image(IMAGE, SENSORS, {"x": 1})
    for number, sensor in enumerate(SENSORS):
        store.put_sensor(IMAGE, sensor, stored(number))
    store.end_image(IMAGE)
    return store


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(store: DaqStore) -> AsyncIterator[DaqServer]:
    async with DaqServer(store, ["tcp://127.0.0.1:*"]) as running:
        yield running


@contextlib.asynccontextmanager
async def dealer(endpoint: str) -> AsyncIterator[zmq.asyncio.Socket]:
    socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    try:
        yield socket
    finally:
        socket.close(linger=0)


async def answer(socket: zmq.asyncio.Socket, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return parse_reply(await socket.recv_multipart())


async def reads_correctly(server: DaqServer, sensor: str = SENSORS[1]) -> None:
    """What every test ends with: a normal client reads a sensor, pixels verified."""
    async with DaqClient(server.endpoints[0], timeout=10.0) as client:
        got = await client.read_sensor(IMAGE, sensor)
    expected = stored(SENSORS.index(sensor))
    assert got.datasums == expected.datasums
    got.verify()
    assert all(np.array_equal(a, b) for a, b in zip(got.segments, expected.segments, strict=True))


# ---- single hostile messages -------------------------------------------------------------


async def test_deep_nesting_is_a_bad_request_not_a_dead_server(server: DaqServer) -> None:
    """The hostile tester's first find: `[` * 4000 made json raise RecursionError."""
    async with dealer(server.endpoints[0]) as socket:
        await socket.send_multipart([MAGIC, b"[" * 4000])
        body = await answer(socket)
        assert (body["ok"], body["code"], body["id"]) == (False, "bad-request", None)
        assert "brackets" in body["message"]
        await socket.send_multipart([MAGIC, b'{"op": "list", "id": 1}'])
        assert (await answer(socket))["images"][0]["name"] == IMAGE
    await reads_correctly(server)


async def test_a_frame_over_the_limit_drops_that_connection_only(server: DaqServer) -> None:
    """ZeroMQ refuses a frame past ``max_frame_bytes`` before it is allocated in full: no
    MemoryError can come of it. The sender's connection is dropped unanswered (its
    DEALER reconnects by itself); everyone else is served."""
    huge = b"{" + b" " * (64 * 2**20) + b"}"
    async with dealer(server.endpoints[0]) as socket:
        await socket.send_multipart([MAGIC, huge])
        await socket.send_multipart([MAGIC, b'{"op": "list", "id": 2}'])
        first = await answer(socket, timeout=10.0)
        assert (first["id"], first["ok"]) == (2, True)  # the huge one got no reply
    await reads_correctly(server)


@pytest.mark.parametrize("error", [MemoryError(), RecursionError("deep"), KeyError("bug")])
async def test_an_unexpected_error_is_answered_internal_and_serving_goes_on(
    server: DaqServer, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def fail(*args: object) -> None:
        raise error

    before = server.stats.internal_errors
    monkeypatch.setattr(server.store, "describe", fail)
    async with dealer(server.endpoints[0]) as socket:
        await socket.send_multipart([MAGIC, b'{"op": "list", "id": 3}'])
        body = await answer(socket)
        assert (body["id"], body["ok"], body["code"]) == (3, False, "internal")
        assert type(error).__name__ in body["message"]
        monkeypatch.undo()
        await socket.send_multipart(
            [MAGIC, b'{"op": "info", "id": 4, "image": "' + IMAGE.encode() + b'"}']
        )
        assert (await answer(socket))["image"]["name"] == IMAGE
    assert server.stats.internal_errors == before + 1
    await reads_correctly(server)


async def test_parsing_that_runs_out_of_memory_is_a_bad_request(
    server: DaqServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(raw: bytes) -> object:
        raise MemoryError

    monkeypatch.setattr("cscs.daq.protocol._decode", out_of_memory)
    async with dealer(server.endpoints[0]) as socket:
        await socket.send_multipart([MAGIC, b'{"op": "list", "id": 5}'])
        body = await answer(socket)
        assert (body["code"], body["message"]) == (
            "bad-request",
            "request is not UTF-8 JSON: MemoryError",
        )
    monkeypatch.undo()
    await reads_correctly(server)


# ---- fuzzing -------------------------------------------------------------------------------

_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=30), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)  # fmt: skip
_IDS = st.integers(min_value=0, max_value=2**40)
_OPS = st.sampled_from(["list", "info", "read", "cancel"])
_IMAGES = st.sampled_from([IMAGE, IMAGE, IMAGE, "CC_O_20261121_000099", ""])
_SENSORS = st.sampled_from([*SENSORS, *SENSORS, "R99_S99", ""])


@st.composite
def _requests(draw: st.DrawFn) -> list[bytes]:
    """Valid-looking requests: each field usually of its type, sometimes of any other,
    sometimes missing."""
    body = {}
    for field, values in (("op", _OPS), ("id", _IDS), ("image", _IMAGES), ("sensor", _SENSORS)):
        choice = draw(st.sampled_from(("typed",) * 8 + ("junk", "left out")))
        if choice != "left out":
            body[field] = draw(values if choice == "typed" else _JUNK)
    return [MAGIC, json.dumps(body).encode()]


_HOSTILE = st.one_of(
    st.lists(st.binary(max_size=200), min_size=1, max_size=6),  # any frames at all
    st.tuples(st.binary(max_size=8).filter(lambda b: b != MAGIC), st.just(b"{}")).map(list),
    st.integers(1, 20_000).map(lambda n: [MAGIC, b"[" * n]),  # deep
    st.integers(1, 2_000).map(lambda n: [MAGIC, b'{"a":' * n + b"1" + b"}" * n]),
    st.integers(4_000, 60_000).map(lambda n: [MAGIC, b'{"op":"list","p":"' + b"x" * n + b'"}']),
    st.integers(1, 4_080).map(lambda n: [MAGIC, b'{"op":"list","id":' + b"9" * n + b"}"]),
    st.sampled_from([b"1e999999", b"-0", b"NaN", b'"\\ud800"', b"null", b"\xef\xbb\xbf{}"]).map(
        lambda raw: [MAGIC, raw]
    ),
)  # fmt: skip
MESSAGES = st.one_of(_requests(), _requests(), _HOSTILE)


def expected_replies(frames: list[bytes]) -> list[str]:
    """What the protocol says the server answers, in order: codes, or begin/data/ok."""
    try:
        request = parse_request(frames)
    except RequestError:
        return ["bad-request"]
    if request.op == "cancel":
        return []  # a cancel is never answered
    if request.op == "list":
        return ["ok"]
    if request.image != IMAGE:
        return ["unknown-image"]
    if isinstance(request, Read):
        return ["begin", "data"] if request.sensor in SENSORS else ["unknown-sensor"]
    return ["ok"]


def _request(**body: object) -> list[bytes]:
    return [MAGIC, json.dumps(body).encode()]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(message=MESSAGES)
@example(message=_request(op="cancel", id=7))  # every kind of answer, every run
@example(message=_request(op="read", id=8, image=IMAGE, sensor=SENSORS[0]))
@example(message=_request(op="read", id=9, image=IMAGE, sensor="R99_S99"))
@example(message=_request(op="info", id=10, image=IMAGE))
@example(message=_request(op="info", id=11, image="CC_O_20261121_000099"))
@example(message=[MAGIC, b"[" * 4000])
@example(message=[b"DAQ2", b"{}"])
async def test_fuzzed_messages_are_each_answered_and_the_server_keeps_serving(
    server: DaqServer, message: list[bytes]
) -> None:
    """For each message, exactly the replies the protocol promises (none for a cancel),
    then the answer to a `list` probe; and afterwards a normal read."""
    expected = expected_replies(message)
    failures = (server.stats.internal_errors, server.stats.serve_failures)
    async with dealer(server.endpoints[0]) as socket:
        await socket.send_multipart(message)
        await socket.send_multipart([MAGIC, json.dumps({"op": "list", "id": PROBE}).encode()])
        got: list[str] = []
        probed = False
        while not probed or len(got) < len(expected):
            reply = await answer(socket)
            if reply["id"] == PROBE and "images" in reply:
                probed = True
            elif reply["ok"]:
                got.append(reply.get("kind", "ok"))
            else:
                got.append(reply["code"])
        assert got == expected, message[:2]
    assert (server.stats.internal_errors, server.stats.serve_failures) == failures


async def test_after_fuzzing_a_normal_client_reads(server: DaqServer) -> None:
    await reads_correctly(server, SENSORS[0])
    await reads_correctly(server, SENSORS[1])


# ---- a flood -------------------------------------------------------------------------------


class Flood:
    """``clients`` DEALERs that each send ``reads`` reads and never read the pixels; run
    on a thread of its own (sync ZeroMQ), as other processes would be."""

    def __init__(self, endpoint: str, clients: int, reads: int) -> None:
        self.endpoint, self.clients, self.reads = endpoint, clients, reads
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.context.set(zmq.MAX_SOCKETS, clients + 64)
        self.sockets: list[zmq.Socket[bytes]] = []

    def send(self) -> None:
        for n in range(self.clients):
            socket = self.context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.RCVHWM, 1)  # libzmq takes no pixels we do not read
            socket.connect(self.endpoint)
            self.sockets.append(socket)
            for r in range(self.reads):
                body = {"op": "read", "id": r, "image": IMAGE, "sensor": SENSORS[(n + r) % 2]}
                socket.send_multipart([MAGIC, json.dumps(body).encode()])

    def first_replies(self, timeout: float) -> list[str]:
        """Each client's first reply (`begin` or an error code): all are answered."""
        poller = zmq.Poller()
        for socket in self.sockets:
            poller.register(socket, zmq.POLLIN)
        first: dict[zmq.Socket[bytes], str] = {}
        deadline = time.monotonic() + timeout
        while len(first) < len(self.sockets) and time.monotonic() < deadline:
            for socket, _ in poller.poll(100):
                body = parse_reply(socket.recv_multipart())
                first[socket] = body.get("kind") or body["code"]
                poller.unregister(socket)
        return list(first.values())

    def close(self) -> None:
        for socket in self.sockets:
            socket.close(linger=0)
        self.context.term()


def enough_descriptors(clients: int) -> bool:
    """Raise the soft fd limit to the hard one; True if that covers the flood (both ends
    of each connection, and a socket's mailbox, are descriptors of this process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard == resource.RLIM_INFINITY or hard >= 3 * clients + 512


@pytest.mark.parametrize("clients", [300])
async def test_a_flood_of_clients_that_never_read_stalls_nothing_and_is_forgotten(
    store: DaqStore, clients: int
) -> None:
    if not enough_descriptors(clients):
        pytest.skip(f"the hard limit on open files is too low for {clients} clients")
    limits = ServerLimits(clients=8, reads=32)
    loop = asyncio.get_running_loop()
    ticks: list[float] = [loop.time()]
    flooding = asyncio.Event()

    async def ticker() -> None:  # the camera's heartbeat, on the loop that owns the server
        while not flooding.is_set():
            await asyncio.sleep(0.1)
            ticks.append(loop.time())

    async with DaqServer(store, ["tcp://127.0.0.1:*"], limits=limits) as server:
        flood = Flood(server.endpoints[0], clients, 8)
        heartbeat = asyncio.create_task(ticker())
        try:
            await asyncio.to_thread(flood.send)
            first = await asyncio.to_thread(flood.first_replies, 30.0)
        finally:
            flooding.set()
            await heartbeat
        try:
            longest = max(b - a for a, b in itertools.pairwise(ticks))
            assert longest < 1.0, f"the owner's loop stalled for {longest:.2f} s"
            assert len(first) == clients  # every client was answered
            assert set(first) <= {"begin", "busy"}
            refused = first.count("busy")  # clients refused outright: no slot for them
            assert refused >= clients - limits.clients
            assert server.stats.busy_refusals >= refused
            assert server.load().reads_preparing + server.load().reads_queued <= limits.reads
            assert server.stats.max_in_flight <= limits.reads_per_client
        finally:
            await asyncio.to_thread(flood.close)
        async with asyncio.timeout(15):
            await server.wait_idle()  # every flood client's slot is free again
        assert server.load().idle
        await reads_correctly(server)


# ---- the serving loop itself failing ---------------------------------------------------------


def fail_once(monkeypatch: pytest.MonkeyPatch, armed: threading.Event) -> None:
    """The serving loop's next receive, once ``armed``, raises (a bug in the loop)."""
    receive = Serving.receive

    async def failing(self: Serving) -> list[zmq.Frame]:
        if armed.is_set():
            armed.clear()
            raise RuntimeError("injected failure of the serving loop")
        return await receive(self)

    monkeypatch.setattr(Serving, "receive", failing)


async def test_a_dying_serving_loop_is_reported_on_the_owners_loop_and_restarted(
    store: DaqStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed = threading.Event()
    fail_once(monkeypatch, armed)
    reported: asyncio.Queue[tuple[BaseException, asyncio.AbstractEventLoop]] = asyncio.Queue()

    def on_failure(exc: BaseException) -> None:
        reported.put_nowait((exc, asyncio.get_running_loop()))

    async with DaqServer(store, ["tcp://127.0.0.1:*"], on_failure=on_failure) as server:
        armed.set()
        async with DaqClient(server.endpoints[0], timeout=10.0) as client:
            await client.list_images()  # answered; the loop's next receive fails
        async with asyncio.timeout(10):
            exc, loop = await reported.get()
        assert isinstance(exc, RuntimeError)
        assert "injected failure" in str(exc)
        assert loop is asyncio.get_running_loop()
        await reads_correctly(server)  # restarted
        assert server.stats.serve_failures == 1
        assert reported.empty()


async def test_the_camera_reports_a_dying_daq_server_as_error_code_1001(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, index: int
) -> None:
    armed = threading.Event()
    fail_once(monkeypatch, armed)
    settings = Settings(prefix=f"h{index}", state_dir=tmp_path)
    async with make_csc(CameraCsc, MemoryBroker(), index=1, settings=settings) as h:
        daq = (await h.remote.next_event("daqAvailable")).data["url"]
        async with h.remote.stream("errorCode") as errors:
            armed.set()
            async with DaqClient(daq, timeout=10.0) as client:
                await client.list_images()
            error = (await errors.next(10)).data
        assert error["errorCode"] == ERROR_TASK_FAILED
        assert "daq-server" in error["errorReport"]
        assert "injected failure of the serving loop" in error["traceback"]
        async with DaqClient(daq, timeout=10.0) as client:
            assert await client.list_images() == []  # serving again


# ---- the bookkeeping, without sockets -------------------------------------------------------


class FakeTracker:
    def __init__(self) -> None:
        self.done = False


def test_the_ledger_bounds_reads_per_client_overall_and_clients() -> None:
    ledger = Ledger(ServerLimits(reads_per_client=2, reads=3, clients=2))
    sent: dict[bytes, list[FakeTracker]] = {}
    for peer in (b"a", b"a", b"b"):
        assert ledger.refuse_read(peer) is None
        ledger.read_started(peer)
        sent.setdefault(peer, []).append(FakeTracker())
        ledger.read_finished(peer, sent[peer][-1])  # on the socket, not yet gone
    assert ledger.refuse_read(b"a") == "at most 2 reads in flight per client"
    assert ledger.refuse_read(b"b") == "at most 3 reads in flight on this server"
    sent[b"a"][0].done = True  # one of a's has left: room overall, but c is a third client
    assert ledger.refuse_read(b"c") == "at most 2 clients with work in flight"
    assert ledger.refuse_read(b"b") is None
    for tracker in [*sent[b"a"], *sent[b"b"]]:
        tracker.done = True
    ledger.sweep()
    assert ledger.load() == Load(0, 0, 0, 0, 0)
    assert ledger.load().idle


def test_the_ledger_counts_replies_by_bytes_and_forgets_reads_never_sent() -> None:
    ledger = Ledger(ServerLimits(replies_per_client=1, reply_bytes=100))
    first, second = FakeTracker(), FakeTracker()
    ledger.reply_sent(b"a", first, 150)
    assert ledger.refuse_reply(b"a") == "at most 1 list/info replies in flight per client"
    assert ledger.refuse_reply(b"b") == "at most 100 bytes of replies in flight on this server"
    first.done = True
    assert ledger.refuse_reply(b"b") is None
    ledger.reply_sent(b"b", second, 10)
    ledger.read_started(b"c")
    assert ledger.load() == Load(clients=2, reads_preparing=1, reads_queued=0,
                                 replies_queued=1, reply_bytes=10)  # fmt: skip
    ledger.read_finished(b"c", None)  # an error, a cancel, a dropped link: nothing queued
    second.done = True
    ledger.sweep()
    assert ledger.load().idle


def test_rate_limited_log_says_the_first_then_counts_the_rest() -> None:
    lines: list[tuple[str, str, dict[str, Any]]] = []
    now = [0.0]
    log = RateLimitedLog(lambda level, event, **f: lines.append((level, event, f)), 10.0,
                         clock=lambda: now[0])  # fmt: skip
    for _ in range(1000):
        log("warning", "busy", "refused", reason="full")
    log("warning", "bad-request", "bad", reason="x")
    assert [line[1] for line in lines] == ["refused", "bad"]
    log.flush()
    assert len(lines) == 2  # the interval has not passed
    now[0] = 10.0
    log.flush()
    assert lines[-1][1] == "999 more busy events were not logged"
    assert lines[-1][2]["suppressed"] == 999
    now[0] = 25.0
    log("warning", "busy", "refused", reason="full")
    assert lines[-1][1] == "refused"
    assert "suppressed" not in lines[-1][2]
