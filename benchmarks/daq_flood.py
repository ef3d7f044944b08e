"""A flood of DAQ clients that ask and never read: the server's memory and the host loop.

    python benchmarks/daq_flood.py [--clients 1500] [--reads 8] [--sensors 3]

A server process stands in for the Camera CSC: it runs ``keep_freed_memory()`` first
(as ``cscs run`` does), holds ``--sensors`` synthesised ComCam sensors in a
:class:`~sim.daq.store.DaqStore`, serves them with :class:`~sim.daq.server.DaqServer`,
and keeps a 0.1 s ticker on its own event loop (the camera's heartbeat). This process
then opens ``--clients`` DEALER sockets; each sends ``--reads`` ``read`` requests and
never reads a reply. Once the server has seen every request, the flood sockets close.

Prints the server process's RSS before the flood, at its peak during it and after the
clients have gone (and the server's in-flight bookkeeping is empty again), the longest
gap between ticks of the host loop, how the requests were answered, and whether a
normal :class:`~cscs.daq.client.DaqClient` still reads a sensor with good pixels.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import time
from multiprocessing.connection import Connection
from typing import Any

import zmq

from cscs.camera.geometry import Camera
from cscs.camera.memory import keep_freed_memory
from cscs.daq.client import DaqClient
from cscs.daq.protocol import MAGIC
from sim.daq.pixels import ElectronicsModel, Scene, synthesize_sensor
from sim.daq.server import DaqServer
from sim.daq.store import DaqStore, SensorData

IMAGE = "CC_O_20261121_000001"
TICK = 0.1


def raise_fd_limit() -> int:
    """Soft fd limit up to the hard one: a flood needs a descriptor per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _in_flight(server: Any) -> tuple[int, int]:
    """Reads being prepared, and clients with work in flight (-1: this server cannot
    say: the one before ADR 0011, which this script also runs against for comparison)."""
    if hasattr(server, "load"):
        load = server.load()
        return load.reads_preparing, load.clients
    return len(getattr(server, "_reads", ())), -1  # that server's private bookkeeping


def _server_process(endpoint: str, sensors: int, control: Connection) -> None:
    keep_freed_memory()
    raise_fd_limit()

    async def main() -> None:
        detectors = Camera.COMCAM.detectors[:sensors]
        store = DaqStore(2 * 10**9)
        store.begin_image(IMAGE, [d.name for d in detectors], {})
        scene = Scene("FLAT", 1.0, 1.0, seed=1)
        for detector in detectors:
            segments = synthesize_sensor(ElectronicsModel(), scene, detector)
            store.put_sensor(IMAGE, detector.name, SensorData.from_segments(segments))
        store.end_image(IMAGE)
        loop = asyncio.get_running_loop()
        gap = {"max": 0.0, "peak_rss": 0.0}

        async def ticker() -> None:  # the camera's heartbeat
            last = loop.time()
            while True:
                await asyncio.sleep(TICK)
                now = loop.time()
                gap["max"] = max(gap["max"], now - last)
                gap["peak_rss"] = max(gap["peak_rss"], rss_mb())
                last = now

        async with DaqServer(store, [endpoint]) as server:
            tick = asyncio.create_task(ticker())
            answered = asyncio.Event()

            def command() -> None:
                request = control.recv()
                if request == "reset":
                    gap.update(max=0.0, peak_rss=rss_mb())
                stats = vars(server.stats).copy()
                stats["preparing"], stats["clients"] = _in_flight(server)
                control.send({"rss": rss_mb(), **gap, "stats": stats})
                if request == "stop":
                    answered.set()

            loop.add_reader(control.fileno(), command)
            control.send(server.endpoints[0])
            await answered.wait()
            tick.cancel()

    asyncio.run(main())


def _ask(control: Connection, request: str) -> dict[str, Any]:
    control.send(request)
    reply: dict[str, Any] = control.recv()
    return reply


def _wait_until(control: Connection, done: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = _ask(control, "poll")
        if done(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.2)  # polling another process; nothing to wait on here


async def _normal_read(endpoint: str) -> str:
    async with DaqClient(endpoint, timeout=10.0) as client:
        sensor = (await client.image_info(IMAGE)).sensors[0]
        pixels = await client.read_sensor(IMAGE, sensor)
    return f"read {sensor}: {len(pixels.segments)} segments, checksums verified"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1500)
    parser.add_argument("--reads", type=int, default=8)
    parser.add_argument("--sensors", type=int, default=3)
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:*")
    args = parser.parse_args()
    raise_fd_limit()
    control, child = multiprocessing.Pipe()
    server = multiprocessing.Process(
        target=_server_process, args=(args.endpoint, args.sensors, child), daemon=True
    )
    server.start()
    if not control.poll(300):
        raise RuntimeError("the server did not start")
    endpoint = control.recv()
    print(f"{args.clients} clients x {args.reads} reads, never read; server at {endpoint}")
    sensors = [d.name for d in Camera.COMCAM.detectors[: args.sensors]]
    before = _ask(control, "reset")
    context = zmq.Context(io_threads=2)
    context.set(zmq.MAX_SOCKETS, max(1024, 2 * args.clients + 64))
    sockets = []
    requests = args.clients * args.reads
    try:
        for n in range(args.clients):
            socket = context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.RCVHWM, 1)
            socket.connect(endpoint)
            sockets.append(socket)
            for r in range(args.reads):
                sensor = sensors[(n + r) % len(sensors)]
                body = {"op": "read", "id": r, "image": IMAGE, "sensor": sensor}
                socket.send_multipart([MAGIC, json.dumps(body).encode()])
        seen = before["stats"]["requests"] + requests
        during = _wait_until(control, lambda s: s["stats"]["requests"] >= seen, 300)
        # Settled: every read the server took has been sent, or is held by a socket.
        during = _wait_until(control, lambda s: s["stats"]["preparing"] == 0, 300)
    finally:
        for socket in sockets:
            socket.close(linger=0)
        context.term()
    after = _wait_until(control, lambda s: s["stats"]["clients"] <= 0, 60)
    time.sleep(1.0)  # a few housekeeping rounds (the trim) before the last figure
    after = _ask(control, "poll")
    check = asyncio.run(_normal_read(endpoint))
    final = _ask(control, "stop")
    server.join(30)
    stats = final["stats"]
    print(
        f"requests seen by the server: {during['stats']['requests'] - before['stats']['requests']}"
    )
    print(f"answers: {json.dumps({k: v for k, v in stats.items() if k != 'requests'})}")
    print(
        f"RSS before {before['rss']:.0f} MB, peak {after['peak_rss']:.0f} MB, "
        f"after {after['rss']:.0f} MB ({after['rss'] / before['rss'] - 1:+.0%} of before)"
    )
    print(f"RSS once the server had answered the flood: {during['rss']:.0f} MB")
    print(
        f"longest interval between ticks of the host loop's {TICK:g} s ticker: {after['max']:.3f} s"
    )
    print(f"afterwards a normal client: {check}")


if __name__ == "__main__":
    main()
