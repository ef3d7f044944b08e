"""DAQ read throughput against raw ZeroMQ, and pixel synthesis time against the readout.

    python benchmarks/daq_throughput.py [--repeats 5]

For TCP loopback and ``ipc://``: a server process holds one synthesised ComCam image
(9 CCDs, ~680 MB); this process reads all of it with :class:`cscs.daq.client.DaqClient`
(checksums verified, flow control on) and, in the same run, with a bare ROUTER/DEALER
pair moving the same bytes (16 zero-copy frames per request, no checks). Both keep two
reads in flight and read the image three times per sample. The ratio ours / raw is the
figure of merit (target >= 0.8).
Then: time to synthesise one ComCam OBJECT image, against the 2 s readout.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path

import zmq
import zmq.asyncio

from cscs.camera.geometry import Camera
from cscs.daq.client import DaqClient
from sim.daq.pixels import ElectronicsModel, Pixels, Scene, synthesize_sensor
from sim.daq.server import DaqServer
from sim.daq.store import DaqStore, SensorData

IMAGE = "CC_O_20261121_000001"
DETECTORS = Camera.COMCAM.detectors
READOUT_TIME = 2.0
PASSES = 3  # each sample reads the image this many times (~2 GB)
IN_FLIGHT = 2  # reads in flight, for ours and for raw alike


def _image() -> dict[str, list[Pixels]]:
    scene = Scene("OBJECT", 15.0, 15.0, seed=1)
    return {d.name: synthesize_sensor(ElectronicsModel(), scene, d) for d in DETECTORS}


def _serve_daq(endpoint: str, ready: Connection) -> None:
    async def main() -> None:
        store = DaqStore(2 * 10**9)
        store.begin_image(IMAGE, [d.name for d in DETECTORS], {})
        for name, segments in _image().items():
            store.put_sensor(IMAGE, name, SensorData.from_segments(segments))
        store.end_image(IMAGE)
        async with DaqServer(store, [endpoint]) as server:
            ready.send(server.endpoints[0])
            await asyncio.Event().wait()

    asyncio.run(main())


def _serve_raw(endpoint: str, ready: Connection) -> None:
    image = _image()
    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    socket.bind(endpoint)
    ready.send(socket.getsockopt_string(zmq.LAST_ENDPOINT))
    while True:
        peer, sensor = socket.recv_multipart()
        socket.send_multipart([peer, *(a.data for a in image[sensor.decode()])], copy=False)


def _start(
    target: Callable[[str, Connection], None], endpoint: str
) -> tuple[multiprocessing.Process, str]:
    receive, send = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.Process(target=target, args=(endpoint, send), daemon=True)
    process.start()
    if not receive.poll(120):
        raise RuntimeError("server did not start")
    return process, str(receive.recv())


async def _read_ours(endpoint: str) -> float:
    in_flight = asyncio.Semaphore(IN_FLIGHT)

    async def read(sensor: str) -> int:
        async with in_flight:
            return (await client.read_sensor(IMAGE, sensor)).nbytes

    async with DaqClient(endpoint) as client:
        await read(DETECTORS[0].name)  # warm up the connection
        start = time.perf_counter()
        sizes = await asyncio.gather(*(read(d.name) for _ in range(PASSES) for d in DETECTORS))
        elapsed = time.perf_counter() - start
    return sum(sizes) / elapsed


def _read_raw(endpoint: str) -> float:
    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    socket.connect(endpoint)
    names = [d.name.encode() for _ in range(PASSES) for d in DETECTORS]
    socket.send(names[0])
    socket.recv_multipart(copy=False)  # warm up
    start = time.perf_counter()
    total, sent = 0, 0
    for _ in range(IN_FLIGHT):
        socket.send(names[sent])
        sent += 1
    for _ in names:
        frames = socket.recv_multipart(copy=False)
        total += sum(len(f.buffer) for f in frames)
        if sent < len(names):
            socket.send(names[sent])
            sent += 1
    elapsed = time.perf_counter() - start
    socket.close(linger=0)
    return total / elapsed


def _throughput(kind: str, endpoint: str, repeats: int) -> tuple[float, float]:
    daq, daq_endpoint = _start(_serve_daq, endpoint.replace("NAME", "daq"))
    raw, raw_endpoint = _start(_serve_raw, endpoint.replace("NAME", "raw"))
    ours, bare = [], []
    try:
        for _ in range(repeats):  # interleaved, so drift hits both alike
            ours.append(asyncio.run(_read_ours(daq_endpoint)))
            bare.append(_read_raw(raw_endpoint))
    finally:
        for process in (daq, raw):
            process.kill()
            process.join()
    return statistics.median(ours), statistics.median(bare)


def _synthesis_time(repeats: int) -> float:
    scene = Scene("OBJECT", 15.0, 15.0, seed=2)
    model = ElectronicsModel()
    times = []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(lambda d: synthesize_sensor(model, scene, d), DETECTORS))
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    image_mb = len(DETECTORS) * 16 * 2048 * 576 * 4 / 1e6
    print(f"one ComCam image: {len(DETECTORS)} CCDs, {image_mb:.0f} MB; median of {args.repeats}")
    print(f"{'transport':<10} {'ours MB/s':>10} {'raw MB/s':>10} {'ours/raw':>9}")
    with tempfile.TemporaryDirectory() as directory:
        for kind, endpoint in (
            ("tcp", "tcp://127.0.0.1:*"),
            ("ipc", f"ipc://{Path(directory) / 'NAME.sock'}"),
        ):
            ours, raw = _throughput(kind, endpoint, args.repeats)
            print(f"{kind:<10} {ours / 1e6:>10.0f} {raw / 1e6:>10.0f} {ours / raw:>9.2f}")
    synthesis = _synthesis_time(args.repeats)
    print(
        f"synthesis of one ComCam OBJECT image: {synthesis:.2f} s "
        f"= {synthesis / READOUT_TIME:.2f} x the {READOUT_TIME:g} s readout"
    )


if __name__ == "__main__":
    main()
