"""EfdWriter as a process (`cscs run EfdWriter --state enabled`) on Mosquitto, SIGKILLed
and started again while a publisher sends QoS 1 events: every event is in the EFD once
(the broker kept what came while it was away; what it had not acknowledged came again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from cscs.core.broker import EmbeddedBroker
from cscs.core.remote import Remote
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.topics import CscAddress, Kind
from cscs.efd.open import open_store
from cscs.efd.records import Measurement
from cscs.efd_writer.interface import CONFIG_DIR

pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(120),
]

EVENTS = 600


@contextlib.asynccontextmanager
async def writer_process(
    broker: EmbeddedBroker, env: dict[str, str], logs: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    with (logs / "EfdWriter.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cscs", "run", "EfdWriter", "--broker", broker.url,
            "--state", "enabled", stdout=log, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_killed_and_restarted_mid_stream_loses_no_event(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    prefix = f"efdp{index}"
    state, configs = tmp_path / "state", tmp_path / "config" / "EfdWriter"
    configs.mkdir(parents=True)
    init = yaml.safe_load((CONFIG_DIR / "_init.yaml").read_text())
    (configs / "_init.yaml").write_text(yaml.safe_dump(init | {"status_interval": 0.2}))
    env = {"CSCS_PREFIX": prefix, "CSCS_STATE_DIR": str(state),
           "CSCS_CONFIG_DIR": str(tmp_path / "config")}  # fmt: skip
    settings = Settings(prefix=prefix, state_dir=state)
    topic = f"{prefix}/Test/9/evt/scalars"
    scalars = Measurement("Test", Kind.EVENT, "scalars")
    writer = CscAddress("EfdWriter", 0, prefix)
    async with mosquitto.transport() as bus, Remote(bus, writer) as remote:

        async def publish(first: int, last: int) -> None:
            for n in range(first, last + 1):
                payload = {"seq": n, "sent_tai": 1.8e9 + n, "value": n}
                assert await bus.publish(topic, json.dumps(payload).encode(), qos=1)
                if n % 20 == 0:
                    await asyncio.sleep(0.02)  # a steady stream, not one burst

        async with writer_process(mosquitto, env, tmp_path) as first:
            await remote.wait_for_state(State.ENABLED, timeout=60)
            await publish(1, EVENTS // 3)
            os.kill(first.pid, signal.SIGKILL)  # mid-batch: some heard, not acknowledged
            await first.wait()
        await publish(EVENTS // 3 + 1, 2 * EVENTS // 3)  # nobody listening: the broker keeps
        async with (
            remote.stream("efdWriterStatus") as status,
            writer_process(mosquitto, env, tmp_path) as _second,
        ):
            await publish(2 * EVENTS // 3 + 1, EVENTS)
            store = await asyncio.to_thread(open_store, settings.efd)
            try:

                def stored() -> list[int]:
                    return [r.seq for r in store.records([scalars], 0, 3e9, index=9)]

                # Each status the writer sends is a moment to look at the store; the
                # assertion below says what is missing if it never has them all.
                with contextlib.suppress(TimeoutError):
                    await status.wait_for(lambda _: len(stored()) >= EVENTS, timeout=30)
                seqs = stored()
            finally:
                store.close()
    assert sorted(seqs) == list(range(1, EVENTS + 1)), (
        f"missing {sorted(set(range(1, EVENTS + 1)) - set(seqs))[:20]}; "
        f"repeated {len(seqs) - len(set(seqs))}"
    )
