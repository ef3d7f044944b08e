"""CSCs as separate processes on real brokers: crashes, broker restarts, the operators'
command line, and the whole night, once per broker (the system tier)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cscs.archiver.interface import IMAGE_ARCHIVED, ImageArchived
from cscs.camera.events import END_READOUT
from cscs.core.broker import EmbeddedBroker, find_mosquitto
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.testing import TestCsc, make_csc
from cscs.core.topics import CscAddress
from cscs.ocs.script import load_script
from sim.site.demo import NIGHT_SCRIPT, images_commanded
from sim.site.night import verify_archived_file
from tests.support.fitsverify import assert_fitsverify_clean

pytestmark = pytest.mark.broker
KEEPALIVE = 5  # the CSCs' MQTT keepalive (docs/interface.md)


async def cscs(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def run_cscs(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    process = await cscs(*args)
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def log_tails(directory: Path, lines: int = 15) -> str:
    """The last lines of every log in ``directory``: what a timed-out night test shows,
    so that a hang on a CI machine can be read from its output alone."""
    tails = []
    for log in sorted(directory.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.name} (last {len(text)} lines)\n" + "\n".join(text))
    return "\n".join(tails) or f"(no logs in {directory})"


async def run_night(
    argv: list[str], env: dict[str, str], logs: Path, timeout: float
) -> tuple[int, str]:
    """Run a night (``cscs demo`` or ``cscs ocs run-script``) to its end and return its
    exit code and output. On a hang: kill its whole session, and fail with what it had
    printed and the CSCs' log tails (the guard is for deadlocks, not for speed: a night
    takes about a minute here)."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    printed: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while line := await process.stdout.readline():
                printed.append(line.decode(errors="replace"))
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        pytest.fail(
            f"the night did not end within {timeout:.0f} s; it printed:\n"
            + "".join(printed)
            + "\nthe CSCs' logs:\n"
            + log_tails(logs)
        )
    assert process.returncode is not None
    return process.returncode, "".join(printed)


@pytest.fixture
async def csc_process(
    real_broker: EmbeddedBroker, index: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await cscs("run", "Test", "--index", str(index), "--broker", real_broker.url)
    yield process
    if process.returncode is None:
        process.kill()
    await process.communicate()


@contextlib.asynccontextmanager
async def standby_remote(broker: EmbeddedBroker, index: int) -> AsyncIterator[Remote]:
    """A Remote to the Test CSC process once it has come up in STANDBY."""
    async with broker.transport() as bus, Remote(bus, CscAddress("Test", index)) as remote:
        await remote.wait_for_state(State.STANDBY, timeout=30)
        yield remote


async def test_killed_csc_shows_offline_to_a_fresh_subscriber(
    real_broker: EmbeddedBroker, index: int, csc_process: asyncio.subprocess.Process
) -> None:
    """SIGKILL: the broker publishes the last will; a new monitor sees OFFLINE, lost."""
    address = CscAddress("Test", index)
    async with standby_remote(real_broker, index):
        os.kill(csc_process.pid, signal.SIGKILL)
        await csc_process.wait()
    async with real_broker.transport() as fresh, Remote(fresh, address) as monitor:
        will = await monitor.wait_for_state(State.OFFLINE, timeout=KEEPALIVE * 1.5 + 1)
    assert will.data.lost is True
    assert will.retained


async def test_sigterm_exits_cleanly_and_says_offline(
    real_broker: EmbeddedBroker, index: int, csc_process: asyncio.subprocess.Process
) -> None:
    """SIGTERM: OFFLINE (not lost) is published and the process exits 0."""
    async with standby_remote(real_broker, index) as remote:
        csc_process.terminate()
        offline = await remote.wait_for_state(State.OFFLINE, timeout=10)
    assert offline.data.lost is False
    assert await csc_process.wait() == 0


async def test_exit_control_ends_the_process(
    real_broker: EmbeddedBroker, index: int, csc_process: asyncio.subprocess.Process
) -> None:
    """exitControl from STANDBY: OFFLINE, then the process exits 0."""
    async with standby_remote(real_broker, index) as remote:
        await remote.command("exitControl")
    async with asyncio.timeout(15):
        assert await csc_process.wait() == 0


async def test_operator_command_line(
    real_broker: EmbeddedBroker, index: int, csc_process: asyncio.subprocess.Process
) -> None:
    """`cscs ocs command` prints acks, exits 0 only on COMPLETE; status lists the CSC."""
    broker = real_broker
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
        async with broker.transport() as fresh, Remote(fresh, h.remote.address) as monitor:
            state = await monitor.next_event("summaryState", timeout=10)
            assert state.data["name"] == "DISABLED"
            await monitor.command("enable", timeout=10)
        assert h.csc.state is State.ENABLED
        assert h.csc.bus.connections == 2
        await h.remote.command("disable", timeout=10)


@pytest.mark.long  # a whole night: the long tier
@pytest.mark.timeout(420)
async def test_demo_night_reads_back_every_image(tmp_path: Path) -> None:
    """README command one on the embedded amqtt broker (what a machine without Mosquitto
    gets), shortened readouts: every image verified, exit 0. (The night on Mosquitto is
    the next test: one full night per broker.)"""
    code, text = await run_night(
        [sys.executable, "-m", "cscs", "demo", "--fast", "--backend", "amqtt"],
        env={**os.environ, "CSCS_STATE_DIR": str(tmp_path)},
        logs=tmp_path / "logs",
        timeout=400,
    )
    assert code == 0, text + log_tails(tmp_path / "logs")
    assert "13 of 13 images taken; 13 of 13 files archived and verified" in text
    assert "13 with their header, 13 of 13 headers complete" in text
    assert "0 problems; every CSC exited cleanly" in text
    rows = [line.split() for line in text.splitlines() if " alive " in line]
    latest = {row[0]: row[5] for row in rows}  # CSC STATE age s CONDITION LATEST-IMAGE
    assert latest["Camera:1"] == latest["Archiver:1"] == latest["HeaderService:1"]
    assert latest["Camera:1"].startswith("AT_O_")
    assert latest["Weather:0"] == "-"
    catalog = tmp_path / "archive" / "catalog.sqlite"
    assert f"archive and catalog: {tmp_path / 'archive'}" in text
    assert catalog.exists()
    assert len(list((tmp_path / "archive" / "LATISS").glob("20*/*/*.fits"))) == 13
    # The night's alarm: the seeing degraded to 1.7" (SERIOUS above 1.5"), recovered (the
    # alarm stale), acknowledged (nominal); QC measured as each image was archived.
    alarms = re.findall(r"alarm: (qc\.\S+) (\w+) \(max (\w+), ([^)]+)\)", text)
    assert ("qc.seeing", "SERIOUS", "SERIOUS", "ACTIVE") in alarms, text
    assert ("qc.seeing", "NONE", "SERIOUS", "stale") in alarms
    assert alarms[-1] == ("qc.seeing", "NONE", "NONE", "stale")  # acknowledged: nominal
    assert all(name == "qc.seeing" for name, *_ in alarms), alarms  # no bias judged
    changes = [line for line in text.splitlines() if "alarm: " in line]
    assert len(changes) == len(set(changes)), changes  # each change said once (amqtt)
    # The day after: a master bias from the 3 biases, QC of the 6 science images, the
    # seeing measured as the simulated sky had it (0.7", 1.2", 1.7", 0.7").
    assert "1 master-bias product written" in text
    assert len(list((tmp_path / "archive" / "LATISS" / "calib" / "bias").rglob("*.fits"))) == 1
    assert "6 detectors of 6 images measured" in text
    seeing = re.findall(r'seeing ([0-9.]+)" \(the simulated sky: ([0-9.]+)"\)', text)
    assert [truth for _, truth in seeing] == ["0.70", "0.70", "1.20", "1.70", "1.70", "0.70"]
    assert all(abs(float(m) / float(t) - 1) < 0.1 for m, t in seeing), seeing
    # Zero points against the sky's catalog the camera wrote for both fields: g and r at
    # 28.1 and 28.0 for 1 electron/s at the zenith, through ~1.2-1.6 airmasses, ~1.6 e/ADU.
    zero_points = [float(z) for z in re.findall(r"zero point ([0-9.]+) mag for 1 ADU/s", text)]
    assert len(zero_points) == 6, text
    assert all(26.8 < z < 27.7 for z in zero_points), zero_points
    assert len(list((tmp_path / "refcat").glob("*.fits"))) >= 2
    # Every file of the night, raws and the master bias, as the FITS standard has them.
    assert assert_fitsverify_clean((tmp_path / "archive").rglob("*.fits")) >= 14


def _session_members(session: int) -> list[int]:
    """Processes still alive in ``session`` (the demo and everything it started)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


@pytest.mark.long  # 7-17 s: the long tier keeps `make test` within 8 minutes
async def test_ctrl_c_stops_the_demo_and_every_process_it_started(tmp_path: Path) -> None:
    """Ctrl-C in a terminal (SIGINT to the whole process group) mid-night: the demo
    says so, exits 130, and leaves no CSC or broker running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", "demo", "--fast", "--backend", "amqtt",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "CSCS_STATE_DIR": str(tmp_path)}, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen: list[str] = []
    waiting_for = "the night to begin (a line 'biases')"
    try:
        async with asyncio.timeout(90):
            while not any(line.startswith("biases") for line in seen):
                line = (await process.stdout.readline()).decode()
                assert line, "the demo ended before the night began:\n" + "".join(seen)
                seen.append(line)
            os.killpg(process.pid, signal.SIGINT)
            waiting_for = "the demo to exit after SIGINT"
            rest, _ = await process.communicate()
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"waited 90 s for {waiting_for}; the demo printed:\n" + "".join(seen))
    assert process.returncode == 130, "".join(seen) + rest.decode()
    assert "interrupted: stopping every CSC" in rest.decode()
    assert _session_members(process.pid) == []


@pytest.mark.long  # a whole night: the long tier
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
@pytest.mark.timeout(420)
async def test_night_script_with_every_csc_in_its_own_process(tmp_path: Path) -> None:
    """The demo's script run by `cscs ocs run-script` against CSCs each started with
    `cscs run` on Mosquitto (the broker the observatory runs; the demo test above is the
    night on amqtt): every image, every sensor archived and verified."""
    env = {**os.environ, "CSCS_STATE_DIR": str(tmp_path)}
    names = ["Weather:0", "Telescope:1", "HeaderService:1", "Archiver:1", "OODS:1",
             "OCSBatch:0", "TelemetryGateway:0", "Camera:1"]  # fmt: skip
    expected = images_commanded(load_script(NIGHT_SCRIPT), {"index": 1})
    logs = tmp_path / "logs"
    logs.mkdir()
    async with EmbeddedBroker("mosquitto") as broker:
        processes = []
        for name in names:
            component, index = name.split(":")
            argv = ["-m", "cscs", "run", component.lower(), "--index", index]
            with (logs / f"{component}-{index}.log").open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, *argv, "--broker", broker.url, env=env, stdout=log, stderr=log
                )
            processes.append(process)
        try:
            async with (
                broker.transport() as bus,
                Remote(bus, CscAddress("Camera", 1)) as camera,
                Remote(bus, CscAddress("Archiver", 1)) as archiver,
                camera.events(END_READOUT) as ends,
                archiver.events(IMAGE_ARCHIVED) as archived,
            ):
                code, out = await run_night(
                    [sys.executable, "-m", "cscs", "ocs", "run-script", str(NIGHT_SCRIPT),
                     "--set", "config=fast", "--broker", broker.url, "--connect-timeout", "30"],
                    env=env, logs=logs, timeout=300,
                )  # fmt: skip
                assert code == 0, out + log_tails(logs)
                assert "script done" in out
                sensors = {}
                for _ in range(expected):
                    end = (await ends.next(30)).data
                    sensors[end.imageName] = end.sensor_names
                wanted = {(i, s) for i, listed in sensors.items() for s in listed}
                files: dict[tuple[str, str], ImageArchived] = {}
                while set(files) != wanted:
                    event = (await archived.next(60)).data
                    files[(event.imageName, event.sensor)] = event
            assert [p for f in files.values() for p in verify_archived_file(f)] == []
            paths = [Path(urlparse(f.url).path) for f in files.values()]
            assert assert_fitsverify_clean(paths) == len(wanted)
            assert all(f.headerComplete for f in files.values())
            with sqlite3.connect(tmp_path / "archive" / "catalog.sqlite") as catalog:
                rows = catalog.execute(
                    "SELECT image_name, sensor, checksum, checksum_algorithm FROM archived_files"
                )
                assert {(i, s): (c, a) for i, s, c, a in rows} == {
                    k: (f.checkSum, f.checkSumAlgorithm) for k, f in files.items()
                }
        finally:
            for process in processes:
                process.terminate()
            codes = [await _exit_code(process, grace=30) for process in processes]
    assert codes == [0] * len(names), log_tails(logs)


async def _exit_code(process: asyncio.subprocess.Process, grace: float) -> int | None:
    """The exit code of a terminated process; ``None`` if it needed SIGKILL after
    ``grace`` seconds (a CSC that does not stop on SIGTERM is a failure to show)."""
    try:
        async with asyncio.timeout(grace):
            return await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
