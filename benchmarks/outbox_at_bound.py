"""The Telemetry Gateway's outbox at its bound: what one ``put`` and one ``status()`` cost
with the queue full (the gateway's default ``queue_capacity``, 100,000 messages: the
OCS side away for a night), against the same calls on an empty queue, in the same run.

    python benchmarks/outbox_at_bound.py [--capacity 100000] [--calls 50]

The full queue is made by inserting its rows directly (a put each would take as long as
the outage): ``imageQuality`` payloads as the gateway queues them, one in ten an
undroppable stage. Then ``--calls`` calls of ``status()`` and ``--calls`` puts (each of
which, the queue being full, drops the oldest metric), each on the full queue and on an
empty one in turn. Printed: ms per call (the median) and the ratio full / empty. A put
is durable (``synchronous=FULL``): its floor is one fsync of this machine's disk.
"""

from __future__ import annotations

import argparse
import functools
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


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main(capacity: int, calls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cscs-outbox-bench-") as directory:
        empty_path, full_path = Path(directory) / "empty.sqlite", Path(directory) / "full.sqlite"
        filled(empty_path, 0)
        filled(full_path, capacity)
        empty, full = Outbox(empty_path, capacity), Outbox(full_path, capacity)
        assert full.status()[0] == capacity, "the queue was not filled as asked"
        # Interleaved, one call on each in turn: what the shared disk does to one, it
        # does to the other, and the ratio stays honest.
        times: dict[str, list[float]] = {"status empty": [], "status full": [],
                                         "put empty": [], "put full": []}  # fmt: skip
        for _ in range(calls):
            times["status empty"].append(timed(empty.status))
            times["status full"].append(timed(full.status))
        for _ in range(calls):
            for name, outbox in (("put empty", empty), ("put full", full)):
                put = functools.partial(outbox.put, TOPIC, lambda seq: stamp(QUALITY, seq, 0.0),
                                        True, 0.0)  # fmt: skip
                times[name].append(timed(put))
        assert full.status()[0] == capacity, "a put on the full queue kept more than its bound"
        assert empty.status()[0] == calls
        empty.close()
        full.close()
    ms = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    print(f"outbox of capacity {capacity}: median of {calls} calls each, empty and full in turn")
    for call in ("put", "status"):
        print(f"{call:>6}: empty {ms[f'{call} empty']:7.3f} ms, full {ms[f'{call} full']:7.3f} ms:"
              f" full / empty = {ms[f'{call} full'] / ms[f'{call} empty']:6.1f}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=50)
    arguments = parser.parse_args()
    main(arguments.capacity, arguments.calls)
