"""The archiver against a DAQ that answers ``list`` with a huge reply (issue 29, item 4).

    python benchmarks/hostile_daq.py [--images 1200000] [--repeat 1]

Mosquitto and Archiver:1 (LATISS) in its own process, ``cscs run`` as a site runs it,
ENABLED, with no camera. A hostile DAQ (:class:`sim.daq.hostile.HostileDaq`) answers
``list`` with ``--images`` images (one sensor each, each listed ``--repeat`` times: 1.2
million is ~84 MB, the size the issue saw) and every other request with an error. A
forged ``daqAvailable`` points the archiver at it; the archiver lists, and this script
waits for the pass's outcome (``catch-up skipped`` or ``caught up`` in its log messages).

Prints the reply's size, the archiver's RSS before and after, the longest gap between
its heartbeats throughout, the outcome, and how long a command round trip took then.
The bounds the issue sets: heartbeat gaps under 2 s, RSS within 20 % of before.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from cscs.core.broker import EmbeddedBroker, find_mosquitto
from cscs.core.remote import Remote
from sim.daq.hostile import HostileDaq, listing
from tests.support.hostile_daq import DAQ_TIMEOUT, announce_daq, archiver_alone
from tests.support.process_site import Heartbeats, rss_bytes


async def main(images: int, repeat: int, outcome_timeout: float) -> None:
    reply = listing(images, "AT_O_20261207", "R00_S00", repeat=repeat)
    print(f"list reply: {len(reply) / 1e6:.1f} MB ({images} images x {repeat})")
    daq = HostileDaq(reply).start()
    try:
        async with EmbeddedBroker("mosquitto") as broker:
            with tempfile.TemporaryDirectory() as state:
                async with archiver_alone(broker, Path(state)) as site:
                    archiver = Remote(site.bus, site.address("Archiver"))
                    pid = site.pid("Archiver")
                    await asyncio.sleep(3)  # settle after enable
                    before = rss_bytes(pid)
                    async with archiver, archiver.stream() as events, Heartbeats(site) as beats:
                        started = time.monotonic()
                        await announce_daq(site, daq.endpoint)
                        try:
                            said = await events.wait_for(
                                lambda e: e.name == "logMessage"
                                and ("catch-up skipped" in e.data["message"]
                                     or "caught up" in e.data["message"]),
                                timeout=outcome_timeout,
                            )  # fmt: skip
                            outcome = said.data["message"][:160]
                        except TimeoutError:
                            outcome = f"no outcome in {outcome_timeout:g} s"
                        elapsed = time.monotonic() - started
                        asked = time.monotonic()
                        await archiver.command("setLogLevel", {"level": 20}, timeout=60)
                        round_trip = time.monotonic() - asked
                        silence = max(beats.longest_silence().values())
                    after = rss_bytes(pid)
    finally:
        daq.close()
    print(f"outcome after {elapsed:.1f} s (daq_timeout {DAQ_TIMEOUT:g} s): {outcome}")
    print(f"longest heartbeat gap: {silence:.2f} s (bound: 2 s)")
    print(f"command round trip after: {round_trip * 1000:.0f} ms")
    print(f"RSS before {before / 1e6:.0f} MB, after {after / 1e6:.0f} MB: "
          f"{100 * (after - before) / before:+.1f} % (bound: +20 %)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1_200_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--outcome-timeout", type=float, default=120.0)
    args = parser.parse_args()
    if find_mosquitto() is None:
        raise SystemExit("needs mosquitto")
    asyncio.run(main(args.images, args.repeat, args.outcome_timeout))
