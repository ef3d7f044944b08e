"""Command → final-ack round trip, next to the raw MQTT round trip on the same broker.

    python benchmarks/command_latency.py [--count 1000]

For each broker (Mosquitto when installed, and the embedded amqtt), in one run:

* raw: a client publishes (QoS 1) to a topic; an echo client in another process
  answers on a second topic (QoS 1); the client waits for it. Both with TCP_NODELAY.
* ours: a Remote sends ``ping`` to a Test CSC (``cscs run Test``) in another process
  and waits for its final ack.

Prints p50 and p99 of each, and ours ÷ raw (target on Mosquitto: ≤ 2).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import aiomqtt

from cscs.core.broker import EmbeddedBroker, find_mosquitto
from cscs.core.broker_address import BrokerAddress
from cscs.core.bus import NODELAY, Bus
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.topics import CscAddress

PING, PONG = "bench/raw/ping", "bench/raw/pong"


def _client(address: BrokerAddress) -> aiomqtt.Client:
    return aiomqtt.Client(address.host, address.port, socket_options=NODELAY)


async def echo(url: str) -> None:
    """The raw responder: answer every ping with a pong (runs in its own process)."""
    async with _client(BrokerAddress.from_url(url)) as client:
        await client.subscribe(PING, qos=1)
        print("ready", flush=True)
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            await client.publish(PONG, payload, qos=1)


async def _child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )


async def raw_round_trips(address: BrokerAddress, count: int) -> list[float]:
    responder = await _child(__file__, "--echo", address.url)
    try:
        assert responder.stdout is not None
        await asyncio.wait_for(responder.stdout.readline(), 30)
        async with _client(address) as client:
            await client.subscribe(PONG, qos=1)
            messages = aiter(client.messages)
            times = []
            for i in range(count + count // 10):
                started = time.perf_counter()
                await client.publish(PING, str(i).encode(), qos=1)
                await asyncio.wait_for(anext(messages), 10)
                times.append(time.perf_counter() - started)
            return times[count // 10 :]  # the first tenth warms up
    finally:
        responder.terminate()
        await responder.wait()


async def command_round_trips(address: BrokerAddress, count: int) -> list[float]:
    target = CscAddress("Test", 999)
    csc = await _child(
        "-m", "cscs", "run", "Test", "--index", "999", "--state", "enabled", "--broker", address.url
    )
    try:
        async with Bus(address) as bus, Remote(bus, target) as remote:
            await remote.wait_for_state(State.ENABLED, timeout=30)
            times = []
            for _ in range(count + count // 10):
                started = time.perf_counter()
                await remote.command("ping")
                times.append(time.perf_counter() - started)
            return times[count // 10 :]
    finally:
        csc.terminate()
        await csc.wait()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def main(count: int) -> None:
    backends = (["mosquitto"] if find_mosquitto() else []) + ["amqtt"]
    print(f"{'broker':10} {'path':8} {'p50 ms':>8} {'p99 ms':>8}  ours/raw (p50, p99)")
    for backend in backends:
        async with EmbeddedBroker(backend) as broker:  # type: ignore[arg-type]
            raw = await raw_round_trips(broker.address, count)
            ours = await command_round_trips(broker.address, count)
        rows = {"raw": raw, "command": ours}
        for name, values in rows.items():
            p50, p99 = percentile(values, 50) * 1e3, percentile(values, 99) * 1e3
            ratio = ""
            if name == "command":
                ratio = (
                    f"  {p50 / (percentile(raw, 50) * 1e3):.2f}x, "
                    f"{p99 / (percentile(raw, 99) * 1e3):.2f}x"
                )
            print(f"{backend:10} {name:8} {p50:8.3f} {p99:8.3f}{ratio}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--echo", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(echo(args.echo) if args.echo else main(args.count))
