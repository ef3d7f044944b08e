"""A CSC started past STANDBY (`cscs run NAME --state enabled`, how a supervisor restarts
a CSC that must carry on) goes through the same transitions and hooks as one commanded
there: `start` (without override), then `enable`, each with its begin and end hooks and
``state_changed``, its summaryState said at each step. A hook that fails stops it
(OFFLINE, and the error); a SIGTERM while it configures leaves OFFLINE the last word.

The hooks on the in-memory bus; then an Archiver, SIGKILLed and restarted as the soak's
supervisor does, catching up at enable the images it missed."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from cscs.archiver.csc import ArchiverCsc
from cscs.archiver.interface import IMAGE_ARCHIVED
from cscs.camera.events import END_READOUT
from cscs.core import generic as g
from cscs.core.broker import EmbeddedBroker
from cscs.core.errors import ExpectedError
from cscs.core.remote import Remote
from cscs.core.schema import NoParams
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.testing import MemoryBroker, TestConfig, TestCsc, make_csc
from cscs.core.topics import CscAddress
from sim.site.night import verify_archived_file
from sim.site.processes import spawn
from tests.support.process_site import process_site

COMMANDS = {State.DISABLED: ["start"], State.ENABLED: ["start", "enable"]}


class RecordingCsc(TestCsc):
    """Records its life-cycle hooks in the order they run; raises in the one named
    ``failing``."""

    def __init__(self, *args: Any, failing: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []
        self.failing = failing

    def _ran(self, hook: str) -> None:
        self.calls.append(hook)
        if hook == self.failing:
            raise ExpectedError(f"{hook} failed (the test)")

    async def begin_start(self, params: g.StartParams) -> None:
        await super().begin_start(params)
        self._ran("begin_start")

    async def end_start(self, params: g.StartParams) -> None:
        self._ran("end_start")

    async def begin_enable(self, params: NoParams) -> None:
        self._ran("begin_enable")

    async def end_enable(self, params: NoParams) -> None:
        self._ran("end_enable")

    async def state_changed(self, old: State, new: State) -> None:
        self._ran(f"state_changed {old.name}->{new.name}")


async def life_until(target: State, *, started: bool) -> tuple[list[str], list[str]]:
    """The hooks a RecordingCsc ran and the summaryStates it said until ``target``:
    started in ``target``, or started in STANDBY and commanded there."""
    broker = MemoryBroker()
    async with (
        broker.transport() as bus,
        Remote(bus, CscAddress("Test", 1)) as remote,
        remote.stream("summaryState") as states,
    ):
        initial = target if started else State.STANDBY
        async with make_csc(RecordingCsc, broker, index=1, initial_state=initial) as h:
            if not started:
                for command in COMMANDS[target]:
                    await h.remote.command(command)
            said: list[str] = []
            while target.name not in said:
                said.append((await states.next(10)).data["name"])
            assert isinstance(h.csc, RecordingCsc)
            return h.csc.calls, said


@pytest.mark.parametrize("target", [State.DISABLED, State.ENABLED], ids=["disabled", "enabled"])
async def test_started_past_standby_runs_the_hooks_a_commanded_csc_runs(target: State) -> None:
    """The same hooks in the same order, and the same summaryStates, as `start` (and
    `enable`) commanded: an archiver restarted ENABLED runs its catch-up at enable."""
    commanded = await life_until(target, started=False)
    started = await life_until(target, started=True)
    assert started == commanded
    hooks, said = started
    expected = ["begin_start", "end_start", "state_changed STANDBY->DISABLED"]
    if target is State.ENABLED:
        expected += ["begin_enable", "end_enable", "state_changed DISABLED->ENABLED"]
    assert hooks == expected
    assert said == ["STANDBY", "DISABLED", "ENABLED"][: len(COMMANDS[target]) + 1]


@pytest.mark.parametrize(
    "failing",
    [
        "begin_start",
        "end_start",
        "state_changed STANDBY->DISABLED",
        "begin_enable",
        "end_enable",
        "state_changed DISABLED->ENABLED",
    ],
)
async def test_a_hook_that_fails_at_a_start_past_standby_stops_the_csc(failing: str) -> None:
    """As a failing hook fails its command (the state as it was, no FAULT): the CSC does
    not run, the error says why, and what monitors see last is OFFLINE; no hook after
    the failed one runs."""
    broker = MemoryBroker()
    made: list[RecordingCsc] = []

    def factory(index: int, **kwargs: Any) -> RecordingCsc:
        made.append(RecordingCsc(index, failing=failing, **kwargs))
        return made[-1]

    with pytest.raises(ExpectedError, match="failed \\(the test\\)"):
        async with make_csc(factory, broker, initial_state=State.ENABLED):
            pass
    (csc,) = made
    assert csc.calls[-1] == failing
    async with broker.transport() as bus, Remote(bus, csc.address) as remote:
        assert await remote.state() is State.OFFLINE


class GatedCsc(RecordingCsc):
    """Its configure() waits for the test to open the gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.configuring = asyncio.Event()
        self.gate = asyncio.Event()

    async def configure(self, config: TestConfig) -> None:
        self.configuring.set()
        await self.gate.wait()


async def test_a_csc_stopped_while_it_configures_at_start_says_offline_last(
    tmp_path: Path,
) -> None:
    """SIGTERM while a CSC started ENABLED configures: OFFLINE at once; when configure()
    returns, no transition follows (no hook runs, no DISABLED or ENABLED is said) and
    the process ends."""
    broker = MemoryBroker()
    csc = GatedCsc(1, broker=broker, settings=Settings(state_dir=tmp_path),
                   initial_state=State.ENABLED)  # fmt: skip
    async with (
        broker.transport() as bus,
        Remote(bus, csc.address) as remote,
        remote.stream("summaryState") as states,
    ):
        running = asyncio.create_task(csc.run())  # as `cscs run` does
        assert (await states.next(10)).data["name"] == "STANDBY"
        await asyncio.wait_for(csc.configuring.wait(), 10)
        await csc.stop("signal SIGTERM (the test)")
        assert (await states.next(10)).data["name"] == "OFFLINE"
        csc.gate.set()
        await asyncio.wait_for(running, 30)
    assert csc.calls == ["begin_start"]
    async with broker.transport() as bus, Remote(bus, csc.address) as remote:
        assert await remote.state() is State.OFFLINE  # what a monitor starting now sees


# ---- a supervisor's restart, as processes --------------------------------------------

BIASES = {"expTime": 0.0, "shutter": False, "imageType": "BIAS"}


def archiver_config(root: Path) -> Path:
    """The shipped Archiver configuration and a site layer (``CSCS_SITE=restart``) with
    no periodic catch-up: what is archived after the restart is archived at enable."""
    shipped = ArchiverCsc.default_config_dir
    assert shipped is not None
    shutil.copytree(shipped, root / "Archiver")
    (root / "Archiver" / "_restart.yaml").write_text("catchup_interval: 0.0\n")
    return root


@pytest.mark.long  # 7-17 s: the long tier keeps `make test` within 8 minutes
@pytest.mark.broker
@pytest.mark.timeout(400)
async def test_an_archiver_restarted_enabled_catches_up_at_enable_what_it_missed(
    mosquitto: EmbeddedBroker, tmp_path: Path
) -> None:
    """An Archiver SIGKILLed, two images taken while it is away, then `cscs run Archiver
    --state enabled` (as the soak's supervisor restarts it): the images the DAQ holds
    and the catalog lacks are archived as it reaches ENABLED, once each, and verify."""
    config = archiver_config(tmp_path / "config")
    async with (
        process_site(mosquitto, tmp_path / "state") as site,
        site.connected(),
        Remote(site.bus, site.address("Camera")) as camera,
        Remote(site.bus, site.address("Archiver")) as archiver,
        archiver.events(IMAGE_ARCHIVED) as archived,
    ):
        await site.kill("Archiver")
        async with camera.events(END_READOUT) as ends:
            await camera.command("takeImages", {"numImages": 2, **BIASES}, timeout=120)
            missed = {(await ends.next(60)).data.imageName for _ in range(2)}
        env = {"CSCS_PREFIX": site.prefix, "CSCS_STATE_DIR": str(site.state),
               "CSCS_CONFIG_DIR": str(config), "CSCS_SITE": "restart"}  # fmt: skip
        address = site.address("Archiver")
        process = await spawn(address, mosquitto.url, env, site.state / "logs", "enabled")
        site.processes[address], site.pids[address] = process, process.pid  # stopped at the end
        await archiver.wait_for_state(State.ENABLED, timeout=90)
        files = [(await archived.next(60)).data for _ in missed]  # LATISS: one sensor each
    assert {f.imageName for f in files} == missed
    for file in files:
        assert await asyncio.to_thread(verify_archived_file, file) == []
