"""CSCs as separate processes: crashes, broker restarts, and the operators' command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cscs.core.broker import EmbeddedBroker
from cscs.core.bus import Bus
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.testing import TestCsc, make_csc
from cscs.core.topics import CscAddress

pytestmark = pytest.mark.broker
KEEPALIVE = 5  # the CSCs' MQTT keepalive (docs/interface.md)


async def cscs(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def run_cscs(*args: str) -> tuple[int, str, str]:
    process = await cscs(*args)
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def csc_process(
    broker: EmbeddedBroker, index: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await cscs("run", "Test", "--index", str(index), "--broker", broker.url)
    yield process
    if process.returncode is None:
        process.kill()
    await process.communicate()


@contextlib.asynccontextmanager
async def standby_remote(broker: EmbeddedBroker, index: int) -> AsyncIterator[Remote]:
    """A Remote to the Test CSC process once it has come up in STANDBY."""
    async with Bus(broker.address) as bus, Remote(bus, CscAddress("Test", index)) as remote:
        await remote.wait_for_state(State.STANDBY, timeout=30)
        yield remote


async def test_killed_csc_shows_offline_to_a_fresh_subscriber(
    broker: EmbeddedBroker, index: int, csc_process: asyncio.subprocess.Process
) -> None:
    """SIGKILL: the broker publishes the last will; a new monitor sees OFFLINE, lost."""
    address = CscAddress("Test", index)
    async with standby_remote(broker, index):
        os.kill(csc_process.pid, signal.SIGKILL)
        await csc_process.wait()
    async with Bus(broker.address) as fresh, Remote(fresh, address) as monitor:
        will = await monitor.wait_for_state(State.OFFLINE, timeout=KEEPALIVE * 1.5 + 1)
    assert will.data["lost"] is True
    assert will.retained


async def test_sigterm_exits_cleanly_and_says_offline(
    broker: EmbeddedBroker, index: int, csc_process: asyncio.subprocess.Process
) -> None:
    """SIGTERM: OFFLINE (not lost) is published and the process exits 0."""
    async with standby_remote(broker, index) as remote:
        csc_process.terminate()
        offline = await remote.wait_for_state(State.OFFLINE, timeout=10)
    assert offline.data["lost"] is False
    assert await csc_process.wait() == 0


async def test_exit_control_ends_the_process(
    broker: EmbeddedBroker, index: int, csc_process: asyncio.subprocess.Process
) -> None:
    """exitControl from STANDBY: OFFLINE, then the process exits 0."""
    async with standby_remote(broker, index) as remote:
        await remote.command("exitControl")
    async with asyncio.timeout(15):
        assert await csc_process.wait() == 0


async def test_operator_command_line(
    broker: EmbeddedBroker, index: int, csc_process: asyncio.subprocess.Process
) -> None:
    """`cscs ocs command` prints acks, exits 0 only on COMPLETE; status lists the CSC."""
    target = f"Test:{index}"
    async with standby_remote(broker, index):
        pass
    code, out, _ = await run_cscs("ocs", "command", target, "start", "--broker", broker.url)
    assert code == 0
    assert "start seq=1: COMPLETE 303" in out
    code, out, _ = await run_cscs("ocs", "command", target, "start", "--broker", broker.url)
    assert code == 1
    assert "FAILED -302 start not allowed in state DISABLED" in out
    code, out, _ = await run_cscs(
        "ocs", "command", target, "setLogLevel", "level=verbose", "--broker", broker.url
    )
    assert code == 1
    assert "parameter 'level'" in out
    code, out, _ = await run_cscs("ocs", "status", "--broker", broker.url, "--listen", "1.5")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith(target + " "))
    assert row.split()[1:3] == ["DISABLED", row.split()[2]]
    assert "alive" in row
    code, out, _ = await run_cscs("ocs", "watch", target, "--count", "3", "--broker", broker.url)
    assert code == 0
    assert f"{target} evt summaryState DISABLED" in out


async def test_unreachable_broker_is_a_clear_error() -> None:
    """No broker at the URL: exit 2 and a message that says what to do."""
    code, _, err = await run_cscs(
        "ocs", "status", "--broker", "mqtt://127.0.0.1:9", "--connect-timeout", "1"
    )
    assert code == 2
    assert "no MQTT broker answered at mqtt://127.0.0.1:9" in err


async def test_csc_survives_a_broker_restart(backend: str, index: int) -> None:
    """Broker stopped and started again under a running CSC: it reconnects, republishes
    its retained state, and commands work, with no restart of the CSC."""
    broker = EmbeddedBroker(backend)  # type: ignore[arg-type]
    async with broker, make_csc(TestCsc, broker.address, index=index) as h:
        await h.remote.command("start")
        await broker.kill()
        await broker.start()  # same port, empty: no retained messages survive
        await h.bus.wait_connected(timeout=30)
        await h.csc.bus.wait_connected(timeout=30)
        async with Bus(broker.address) as fresh, Remote(fresh, h.remote.address) as monitor:
            state = await monitor.next_event("summaryState", timeout=10)
            assert state.data["name"] == "DISABLED"
            await monitor.command("enable", timeout=10)
        assert h.csc.state is State.ENABLED
        assert h.csc.bus.connections == 2
        await h.remote.command("disable", timeout=10)


def test_interface_doc_is_current() -> None:
    """docs/interface.md is what `cscs interface-doc` would write from the schemas."""
    from cscs.core.interface_doc import render
    from cscs.registry import REGISTRY

    path = os.path.join(os.path.dirname(__file__), "..", "docs", "interface.md")
    with open(path) as f:
        assert f.read() == render(e.load().interface for e in REGISTRY)


async def test_demo_night_reads_back_every_image(backend: str, tmp_path: Path) -> None:
    """README command one, shortened readouts: every image verified, exit 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", "demo", "--fast", "--backend", backend,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CSCS_STATE_DIR": str(tmp_path)},
    )  # fmt: skip
    async with asyncio.timeout(110):
        out, err = await process.communicate()
    text = out.decode()
    assert process.returncode == 0, text + err.decode()
    assert "10 images taken; 10 of 10 files archived and verified" in text
    assert "10 with their header, 10 of 10 headers complete" in text
    assert "0 problems; every CSC exited cleanly" in text
    catalog = tmp_path / "archive" / "catalog.sqlite"
    assert f"archive and catalog: {tmp_path / 'archive'}" in text
    assert catalog.exists()
    assert len(list((tmp_path / "archive" / "LATISS").rglob("*.fits"))) == 10
