"""``cscs demo``: start the embedded broker and every CSC that exists, each in its own
process (the same ``cscs run`` a user would type), and take them through a night's
life cycle as the OCS would.

Today the CSCs that exist are the framework's Test CSCs; camera, header service and
archiver join this demo as they are built.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TextIO

from cscs.core.broker import Backend, EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.protocol import AckCode
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.topics import CscAddress
from sim.ocs.operator import show_status

__all__ = ["run_demo"]

CSCS = (CscAddress("Test", 1), CscAddress("Test", 2))
# (target index, command, params, expected final ack)
STEPS: tuple[tuple[int, str, dict[str, object], AckCode], ...] = (
    (1, "start", {"configurationOverride": ""}, AckCode.COMPLETE),
    (2, "start", {"configurationOverride": "french"}, AckCode.COMPLETE),
    (1, "enable", {}, AckCode.COMPLETE),
    (2, "enable", {}, AckCode.COMPLETE),
    (1, "ping", {}, AckCode.COMPLETE),
    (2, "wait", {"duration": 0.5}, AckCode.COMPLETE),
    (1, "fail", {"reason": "a refusal the operator can read"}, AckCode.FAILED),
    (2, "setScalars", {"value": 7, "text": "seven"}, AckCode.COMPLETE),
    (1, "disable", {}, AckCode.COMPLETE),
    (2, "disable", {}, AckCode.COMPLETE),
    (1, "standby", {}, AckCode.COMPLETE),
    (2, "standby", {}, AckCode.COMPLETE),
)


async def _spawn(address: CscAddress, broker_url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", "run", address.name, "--index", str(address.index),
        "--broker", broker_url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _stop(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    for process in processes:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def run_demo(backend: Backend = "auto", out: TextIO = sys.stdout) -> int:
    """Run the demo; 0 only if every step ended as expected and every CSC exited cleanly."""
    failures = 0
    latencies: list[float] = []
    async with EmbeddedBroker(backend) as broker:
        print(f"broker: {broker.backend} at {broker.url}", file=out, flush=True)
        processes = [await _spawn(a, broker.url) for a in CSCS]
        try:
            async with Bus(broker.address) as bus:
                remotes = {a.index: Remote(bus, a) for a in CSCS}
                async with contextlib.AsyncExitStack() as stack:
                    for remote in remotes.values():
                        await stack.enter_async_context(remote)
                    for remote in remotes.values():
                        await remote.wait_for_state(State.STANDBY, timeout=60)
                    print(f"{len(CSCS)} CSCs up, each in its own process", file=out, flush=True)
                    for number, (index, command, params, expected) in enumerate(STEPS, 1):
                        started = time.perf_counter()
                        ack = await remotes[index].command(command, params, check=False)
                        latencies.append(time.perf_counter() - started)
                        ok = ack.code is expected
                        failures += not ok
                        mark = "ok " if ok else "BAD"
                        print(
                            f"[{number:2}/{len(STEPS)}] {mark} {remotes[index].address} "
                            f"{command}: {ack.code.name} {ack.result}",
                            file=out,
                            flush=True,
                        )
                    await show_status(bus, "obs", out=out, listen=1.5)
                    for remote in remotes.values():
                        await remote.command("exitControl")
            for process in processes:
                async with asyncio.timeout(15):
                    code = await process.wait()
                failures += code != 0
        finally:
            await _stop(processes)
    latencies.sort()
    median = latencies[len(latencies) // 2] * 1e3 if latencies else float("nan")
    print(
        f"summary: {len(STEPS)} commands, {failures} unexpected outcomes, "
        f"median command round trip {median:.1f} ms; every CSC exited "
        f"{'cleanly' if not failures else 'with problems'}",
        file=out,
    )
    return 0 if failures == 0 else 1
