"""The Telemetry Gateway's outbox at its bound: what one ``put`` and one ``status()`` cost
with the queue full (the gateway's default ``queue_capacity``, 100,000 messages: the
OCS side away for a night), against the same calls on an empty queue, in the same run.

    python benchmarks/outbox_at_bound.py [--capacity 100000] [--calls 50]

The full queue is made by inserting its rows directly (a put each would take as long as
the outage): ``imageQuality`` payloads as the gateway queues them, one in ten an
undroppable stage. Then ``--calls`` calls of ``status()`` and ``--calls`` puts (each of
which, the queue being full, drops the oldest metric); the same on an empty queue. Printed:
ms per call (the median) and the ratio full / empty. A put is durable (``synchronous=FULL``): its
floor is one fsync of this machine's disk.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cscs.core.publisher import stamp
from cscs.telemetry_gateway.interface import ImageQuality
from cscs.telemetry_gateway.outbox import Outbox

TOPIC = "obs/TelemetryGateway/0/evt/imageQuality"
QUALITY = ImageQuality(
    imageName="AT_O_20261121_000001", instrument="LATISS", nSensors=1, psfFwhm=0.8,
    psfFwhmMin=0.8, psfFwhmMax=0.8, psfE1=0.01, psfE2=0.0, ellipticity=0.01, skyMean=40.0,
    skyRms=6.5, zeroPoint=27.5, nSources=100,
)  # fmt: skip


def filled(path: Path, count: int) -> None:
    """``count`` queued messages at ``path``, inserted in one transaction."""
    Outbox(path, max(count, 1)).close()  # the schema, as the outbox makes it
    payload = stamp(QUALITY, 1, 0.0)
    rows = ((TOPIC, int(n % 10 != 0), payload, float(n)) for n in range(count))
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO outbox (topic, droppable, payload, queued_tai) VALUES (?, ?, ?, ?)",
            rows,
        )


def per_call(call: Callable[[], object], calls: int) -> float:
    """Median ms of one call."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def measure(directory: Path, queued: int, capacity: int, calls: int) -> tuple[float, float]:
    path = directory / f"outbox-{queued}.sqlite"
    filled(path, queued)
    outbox = Outbox(path, capacity)
    try:
        assert outbox.status()[0] == queued, "the queue was not filled as asked"
        status = per_call(outbox.status, calls)
        put = per_call(lambda: outbox.put(TOPIC, lambda seq: stamp(QUALITY, seq, 0.0), True,
                                          0.0), calls)  # fmt: skip
        expected = min(queued + calls, capacity)
        assert outbox.status()[0] == expected, "a put lost or kept too many"
    finally:
        outbox.close()
    return put, status


def main(capacity: int, calls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cscs-outbox-bench-") as directory:
        empty_put, empty_status = measure(Path(directory), 0, capacity, calls)
        full_put, full_status = measure(Path(directory), capacity, capacity, calls)
    print(f"outbox of capacity {capacity}, median of {calls} calls each")
    print(f"put:      empty {empty_put:8.2f} ms, full {full_put:8.2f} ms: "
          f"{full_put / empty_put:6.1f} x")  # fmt: skip
    print(f"status(): empty {empty_status:8.3f} ms, full {full_status:8.3f} ms: "
          f"{full_status / empty_status:6.1f} x")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=50)
    arguments = parser.parse_args()
    main(arguments.capacity, arguments.calls)
