"""The EFD writer's throughput with each store, against a bare subscriber on the same
broker in the same run, and its CPU per 1000 messages.

    python -m benchmarks.efd_throughput [--messages 20000] [--stores sqlite,influxdb]

Then the time to rebuild one ComCam image's header from the EFD
(:mod:`benchmarks.efd_rebuild`).

* baseline: a subscriber of the CSCs' events (QoS 1, nothing done with a message)
  receives ``--messages`` events published as fast as the broker takes them (QoS 1,
  10 in flight): messages per second from the first publish to the last received;
* ``EfdWriter:0`` as a process (``cscs run EfdWriter --state enabled``), once per
  store: the same events, from the first publish until its ``efdWriterStatus`` says
  they are written; messages per second, the ratio to the baseline, and the writer's
  CPU seconds (user + system, from /proc) per 1000 messages. Then the store is asked
  how many of them it holds.

The InfluxDB store needs ``influxd`` (a private server is started through
``sim/site/influxd.py``); without it that line says why it was skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks import efd_rebuild
from cscs.core.broker import Backend, EmbeddedBroker, find_mosquitto
from cscs.core.bus import Bus
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.topics import CscAddress, Kind
from cscs.efd.open import open_store
from cscs.efd.records import Measurement
from cscs.efd_writer.interface import CONFIG_DIR

PREFIX = "efdbench"  # each store's run has its own (no retained status of the last run)
IN_FLIGHT = 10  # aiomqtt warns above 10 pending publishes


def event(n: int) -> bytes:
    return json.dumps({"seq": n, "sent_tai": 1.8e9 + n, "value": n, "text": "x" * 40}).encode()


async def publish_all(bus: Bus, prefix: str, count: int) -> None:
    """``count`` events at QoS 1, ``IN_FLIGHT`` at a time."""
    topic = f"{prefix}/Test/9/evt/scalars"
    for first in range(1, count + 1, IN_FLIGHT):
        last = min(first + IN_FLIGHT, count + 1)
        await asyncio.gather(*(bus.publish(topic, event(n), qos=1) for n in range(first, last)))


async def baseline(bus: Bus, count: int) -> float:
    async with bus.subscription(f"{PREFIX}/+/+/evt/+", maxsize=0) as received:
        started = time.perf_counter()
        sender = asyncio.create_task(publish_all(bus, PREFIX, count))
        for _ in range(count):
            await received.get(60)
        await sender
        return count / (time.perf_counter() - started)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def writer_process(broker: EmbeddedBroker, env: dict[str, str]) -> AsyncIterator[int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", "run", "EfdWriter", "--broker", broker.url,
        "--state", "enabled", env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process.pid
    finally:
        process.terminate()
        await process.wait()


async def through_writer(
    broker: EmbeddedBroker, bus: Bus, count: int, url: str, root: Path, prefix: str
) -> tuple[float, float, int]:
    """Messages per second recorded, CPU seconds per 1000, and how many the store has."""
    configs = root / "config" / "EfdWriter"
    configs.mkdir(parents=True, exist_ok=True)
    init = yaml.safe_load((CONFIG_DIR / "_init.yaml").read_text())
    (configs / "_init.yaml").write_text(yaml.safe_dump(init | {"status_interval": 0.05}))
    env = {"CSCS_PREFIX": prefix, "CSCS_STATE_DIR": str(root / "state"),
           "CSCS_CONFIG_DIR": str(root / "config"), "CSCS_EFD": url}  # fmt: skip
    async with (
        Remote(bus, CscAddress("EfdWriter", 0, prefix)) as remote,
        remote.stream("efdWriterStatus") as status,
        writer_process(broker, env) as pid,
    ):
        await remote.wait_for_state(State.ENABLED, timeout=60)
        before = (await status.next(30)).data["written"]
        cpu = cpu_seconds(pid)
        started = time.perf_counter()
        await publish_all(bus, prefix, count)
        last: dict[str, Any] = {}

        def done(received: Any) -> bool:
            last.update(received.data)
            return bool(received.data["written"] >= before + count)

        try:
            await status.wait_for(done, 300)
        except TimeoutError:
            raise SystemExit(f"the writer did not write them all within 300 s: {last}") from None
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu
    store = open_store(url)
    try:
        held = len(store.records([Measurement("Test", Kind.EVENT, "scalars")], 0, 3e9, index=9))
    finally:
        store.close()
    return count / elapsed, cpu / count * 1000, held


@contextlib.contextmanager
def influx_url() -> Iterator[str | None]:
    """A private InfluxDB's URL, or None (and why, printed) when there is none."""
    try:
        support: Any = importlib.import_module("sim.site.influxd")
    except ImportError:
        print("InfluxDB: skipped (sim/site/influxd.py is not in this checkout)")
        yield None
        return
    if support.find_influxd() is None:
        print("InfluxDB: skipped (influxd is not installed)")
        yield None
        return
    with support.private_influx() as server:
        yield server.url("efd")


async def main(messages: int, stores: list[str]) -> None:
    backend: Backend = "mosquitto" if find_mosquitto() else "auto"
    with tempfile.TemporaryDirectory(prefix="cscs-efd-bench-") as directory:
        root = Path(directory)
        async with EmbeddedBroker(backend) as broker, broker.transport() as bus:
            print(f"broker: {broker.backend}; {messages} QoS 1 events, {IN_FLIGHT} in flight")
            base = await baseline(bus, messages)
            print(f"bare subscriber (baseline): {base:.0f} messages/s")
            for name in stores:
                with contextlib.ExitStack() as stack:
                    if name == "sqlite":
                        url: str | None = f"sqlite:///{root / 'sqlite' / 'efd.sqlite3'}"
                    else:
                        url = stack.enter_context(influx_url())
                    if url is None:
                        continue
                    rate, cpu, held = await through_writer(
                        broker, bus, messages, url, root / name, f"{PREFIX}{name}"
                    )
                    print(f"EfdWriter:0 into {name}: {rate:.0f} messages/s recorded, "
                          f"{rate / base:.2f} x the baseline; {cpu:.3f} CPU s per 1000 "
                          f"messages; the store holds {held} of {messages}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--stores", default="sqlite,influxdb")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.messages, arguments.stores.split(",")))
    efd_rebuild.main(runs=7)
    sys.exit(0)
