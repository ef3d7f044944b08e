"""A CSC on a real broker (embedded amqtt and Mosquitto): life cycle, commands, acks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cscs.core.errors import ExpectedError
from cscs.core.protocol import Ack, AckCode
from cscs.core.remote import AckError, Remote
from cscs.core.schema import NoParams
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.testing import (
    CscHarness,
    MemoryBroker,
    TestConfig,
    TestCsc,
    check_bad_commands,
    check_standard_state_transitions,
    make_csc,
    send_raw,
)
from cscs.core.topics import CscAddress, Kind
from cscs.core.transport import Connector

COMPONENT_COMMANDS: dict[str, dict[str, Any]] = {
    "ping": {},
    "wait": {"duration": 1},
    "fail": {},
    "bug": {},
    "slow": {},
    "fault": {},
    "setScalars": {"value": 1},
}


async def test_standard_state_transitions(broker: Connector, index: int) -> None:
    """Every legal and illegal transition; component commands only in ENABLED."""
    async with make_csc(TestCsc, broker, index=index) as h:
        await check_standard_state_transitions(h.remote, COMPONENT_COMMANDS)


async def test_bad_commands_are_refused(broker: Connector, index: int) -> None:
    """Unknown commands, ill-typed or unknown params, malformed payloads: FAILED or dropped."""
    async with make_csc(TestCsc, broker, index=index) as h:
        await check_bad_commands(h.remote)


async def test_generic_events_on_startup(broker: Connector, index: int) -> None:
    """A fresh subscriber sees the retained generic events of ICD §3."""
    async with make_csc(TestCsc, broker, index=index, heartbeat_interval=0.1) as h:
        await h.remote.next_event("logLevel")  # the last of them: all are published now
        versions = await h.remote.next_event("softwareVersions")
        assert versions.data["xmlVersion"] == "1.0"
        assert versions.retained
        available = await h.remote.next_event("configurationsAvailable")
        assert available.data["overrides"] == "broken.yaml,french.yaml"
        assert (await h.remote.next_event("logLevel")).data["level"] == 20
        assert (await h.remote.next_event("authList")).data["authorizedUsers"] == ""
        async with h.remote.stream("heartbeat") as beats:
            first = await beats.next(5)
            second = await beats.next(5)
        assert second.seq == first.seq + 1


async def test_hostile_payloads_leave_the_csc_alive(broker: Connector, index: int) -> None:
    """Garbage, a 2 MB payload and a flood of junk: the heartbeat goes on, commands work."""
    async with make_csc(TestCsc, broker, index=index, heartbeat_interval=0.1) as h:
        big = {"seq": 99, "origin": h.bus.client_id, "identity": "x@y", "params": {}}
        big["padding"] = "x" * (2 * 1024 * 1024)
        async with h.bus.subscription(h.remote.address.ack) as acks:
            await send_raw(h.bus, h.remote.address, "start", json.dumps(big).encode())
            ack = Ack.from_wire(json.loads((await acks.get(10)).payload))
        assert ack.code is AckCode.FAILED
        assert "exceeds the limit" in ack.result
        junk = [b"", b"\x00" * 1000, b"null", b'{"seq": 1}', b"[" * 50_000, b"\xff" * 3_000_000]
        async with h.remote.stream("logMessage") as logs:
            for payload in junk:
                await send_raw(h.bus, h.remote.address, "enable", payload)
            warnings = [await logs.next(10) for _ in junk]
        assert all(w.data["level"] == 30 for w in warnings)
        assert "not UTF-8" in warnings[-1].data["message"]
        async with h.remote.stream("heartbeat") as beats:
            await beats.next(5)
            await beats.next(5)
        await h.remote.command("start")
        assert h.csc.state is State.DISABLED


async def test_retained_command_is_not_obeyed(broker: Connector, index: int) -> None:
    """A command left retained on the broker is replayed at every (re)subscribe: ignored."""
    address = CscAddress("Test", index)
    async with broker.transport() as bus:
        body = {"seq": 1, "origin": "rogue", "identity": "x@y", "params": {}}
        await bus.publish(address.command("start"), json.dumps(body).encode(), retain=True)
        async with (
            bus.subscription(address.event("logMessage")) as logs,
            make_csc(TestCsc, broker, index=index) as h,
        ):
            messages = [json.loads((await logs.get(10)).payload)["message"] for _ in range(2)]
            assert any("ignored a retained command" in m for m in messages), messages
            await h.remote.command("setLogLevel", {"level": 20})  # a round trip later
            assert h.csc.state is State.STANDBY
        await bus.publish(address.command("start"), b"", retain=True)  # clear it


async def test_unauthorized_identity_gets_noperm(broker: Connector, index: int) -> None:
    """Once users are listed, anyone else gets NOPERM and nothing changes."""
    async with make_csc(TestCsc, broker, index=index) as h:
        await h.remote.command("setAuthList", {"authorizedUsers": "night@summit"})
        assert (await h.remote.next_event("authList")).data["authorizedUsers"] == "night@summit"
        h.remote.identity = "intruder@elsewhere"
        with pytest.raises(AckError) as refused:
            await h.remote.command("start")
        assert refused.value.ack.code is AckCode.NOPERM
        assert "intruder@elsewhere is not authorized" in refused.value.ack.result
        assert h.csc.lifecycle.state is State.STANDBY
        h.remote.identity = "night@summit"
        await h.remote.command("start")
        assert h.csc.state.name == "DISABLED"


async def enabled(h: CscHarness) -> CscHarness:
    await h.remote.command("start")
    await h.remote.command("enable")
    return h


async def test_every_ack_outcome(broker: Connector, index: int) -> None:
    """COMPLETE, INPROGRESS then COMPLETE, FAILED (expected and bug), TIMEOUT."""
    async with make_csc(TestCsc, broker, index=index) as h:
        await enabled(h)
        seen: list[Ack] = []
        done = await h.remote.command("wait", {"duration": 0.2}, on_ack=seen.append)
        assert [a.code for a in seen] == [AckCode.INPROGRESS, AckCode.COMPLETE]
        assert seen[0].timeout == pytest.approx(0.2)
        assert done.result == "waited 0.2 s"

        failed = await h.remote.command("fail", {"reason": "no film"}, check=False)
        assert (failed.code, failed.result, failed.error) == (AckCode.FAILED, "no film", 1)

        async with h.remote.stream("logMessage") as logs:
            bug = await h.remote.command("bug", check=False)
            record = await logs.wait_for(lambda r: r.data["level"] >= 40)
        assert bug.code is AckCode.FAILED
        assert "ZeroDivisionError" in bug.result
        assert bug.error == 2
        assert "Traceback" in record.data["traceback"]

        slow = await h.remote.command("slow", check=False)
        assert slow.code is AckCode.TIMEOUT
        assert "longer than 0.1 s" in slow.result


async def test_leaving_enabled_aborts_running_commands(broker: Connector, index: int) -> None:
    """A long command still running when the CSC is disabled is acked ABORTED."""
    async with make_csc(TestCsc, broker, index=index) as h:
        await enabled(h)
        started = asyncio.Event()

        def on_ack(ack: Ack) -> None:
            if ack.code is AckCode.INPROGRESS:
                started.set()

        waiting = asyncio.create_task(
            h.remote.command("wait", {"duration": 30}, on_ack=on_ack, check=False)
        )
        await asyncio.wait_for(started.wait(), 10)
        await h.remote.command("disable")
        aborted = await asyncio.wait_for(waiting, 10)
        assert aborted.code is AckCode.ABORTED
        assert "left ENABLED" in aborted.result


async def test_fault_publishes_error_code_then_state(broker: Connector, index: int) -> None:
    """fault(): errorCode first, then summaryState FAULT; only standby leaves it."""
    async with make_csc(TestCsc, broker, index=index) as h:
        await enabled(h)
        async with h.remote.stream("#") as events:
            await h.remote.command("fault")
            order: list[tuple[str, dict[str, Any]]] = []
            while len(order) < 2:
                item = await events.next(10)
                if item.name in ("errorCode", "summaryState") and not item.retained:
                    order.append((item.name, item.data))
        assert order[0][0] == "errorCode"
        assert order[0][1]["errorCode"] == 42
        assert order[1][1]["name"] == "FAULT"
        failed = await h.remote.command("enable", check=False)
        assert failed.result == "enable not allowed in state FAULT"
        await h.remote.command("standby")
        assert h.csc.state is State.STANDBY


async def test_configuration_override(broker: Connector, index: int) -> None:
    """start applies the named override; a bad one is refused and the CSC stays put."""
    async with make_csc(TestCsc, broker, index=index) as h:
        broken = await h.remote.command("start", {"configurationOverride": "broken"}, check=False)
        assert broken.code is AckCode.FAILED
        assert "broken.yaml is invalid: wait_scale" in broken.result
        missing = await h.remote.command("start", {"configurationOverride": "nope"}, check=False)
        assert "available: broken.yaml, french.yaml" in missing.result
        assert h.csc.state is State.STANDBY
        assert h.csc.config == TestConfig()  # the schema's defaults until start
        await h.remote.command("start", {"configurationOverride": "french"})
        applied = await h.remote.next_event("configurationApplied")
        assert applied.data["configurations"] == "_init.yaml,french.yaml"
        csc = h.csc
        assert isinstance(csc, TestCsc)
        assert csc.config.greeting == "bonjour"


class PickyCsc(TestCsc):
    """Refuses a French configuration in configure(), after looking at self.config."""

    seen: list[str]

    async def configure(self, config: TestConfig) -> None:
        self.seen.append(self.config.greeting)  # the new one is already in place
        if config.greeting == "bonjour":
            raise ExpectedError("no French here")


async def test_a_configuration_refused_by_configure_is_not_kept(
    broker: Connector, index: int
) -> None:
    """configure() sees the new configuration as self.config; if it refuses it, start is
    FAILED with its reason and the previous configuration is back."""

    def factory(i: int, **kwargs: Any) -> PickyCsc:
        csc = PickyCsc(i, **kwargs)
        csc.seen = []
        return csc

    async with make_csc(factory, broker, index=index) as h:
        csc = h.csc
        assert isinstance(csc, PickyCsc)
        refused = await h.remote.command("start", {"configurationOverride": "french"}, check=False)
        assert (refused.code, refused.result) == (AckCode.FAILED, "no French here")
        assert csc.seen == ["bonjour"]
        assert csc.config == TestConfig()
        assert csc.state is State.STANDBY
        await h.remote.command("start")
        assert (csc.seen, csc.config.greeting) == (["bonjour", "hello"], "hello")


async def test_a_csc_started_past_standby_is_configured_as_a_start_would(
    index: int, tmp_path: Path
) -> None:
    """`cscs run NAME --state enabled` (how a supervisor restarts a CSC that must carry
    on): the configuration a `start` without override applies is applied, through the
    component's configure(); one that cannot be is not run on the defaults, it stops
    the CSC with the reason."""

    def factory(i: int, **kwargs: Any) -> PickyCsc:
        csc = PickyCsc(i, **kwargs)
        csc.seen = []
        return csc

    configs = tmp_path / "config" / "Test"
    configs.mkdir(parents=True)
    (configs / "_init.yaml").write_text("schema_version: 1\ngreeting: hola\n")
    settings = Settings(state_dir=tmp_path / "state", config_dir=tmp_path / "config")
    broker = MemoryBroker()
    async with make_csc(factory, broker, index=index, settings=settings,
                        initial_state=State.ENABLED) as h:  # fmt: skip
        assert isinstance(h.csc, PickyCsc)
        assert (h.csc.seen, h.csc.config.greeting) == (["hola"], "hola")
    (configs / "_init.yaml").write_text("schema_version: 1\ngreeting: bonjour\n")
    with pytest.raises(ExpectedError, match="no French here"):
        async with make_csc(factory, broker, index=index, settings=settings,
                            initial_state=State.ENABLED):  # fmt: skip
            pass
    async with broker.transport() as bus, Remote(bus, CscAddress("Test", index)) as remote:
        assert await remote.state() is State.OFFLINE  # not a retained ENABLED left behind


class SlowToConfigureCsc(TestCsc):
    """Its configure() waits for the test: the moment between connecting and listening."""

    configured: asyncio.Event

    async def configure(self, config: TestConfig) -> None:
        await self.configured.wait()


async def test_a_csc_started_past_standby_says_enabled_only_once_configured(
    index: int,
) -> None:
    """A supervisor's restart (`--state enabled`): until configure() is done, the CSC's
    summaryState is STANDBY, never ENABLED; a header service that said ENABLED before
    it listened to its camera lost the next image's header in the soak night. Then
    DISABLED and ENABLED, as `start` and `enable` commanded would say."""
    broker = MemoryBroker()
    release = asyncio.Event()

    def factory(i: int, **kwargs: Any) -> SlowToConfigureCsc:
        csc = SlowToConfigureCsc(i, **kwargs)
        csc.configured = release
        return csc

    async with (
        broker.transport() as bus,
        Remote(bus, CscAddress("Test", index)) as remote,
        remote.stream("summaryState") as states,
    ):
        starting = asyncio.create_task(_run_started(factory, broker, index))
        first = await states.next(10)
        assert first.data["summaryState"] == State.STANDBY
        release.set()
        then = [(await states.next(10)).data["summaryState"] for _ in range(2)]
        assert then == [State.DISABLED, State.ENABLED]
        await starting


async def _run_started(factory: Any, broker: MemoryBroker, index: int) -> None:
    async with make_csc(factory, broker, index=index, initial_state=State.ENABLED) as h:
        assert h.csc.state is State.ENABLED


class HookedCsc(TestCsc):
    """Fails the hooks it is told to, to check the life cycle's rollback."""

    failing: set[str] = set()

    async def begin_enable(self, params: NoParams) -> None:
        if "begin_enable" in self.failing:
            raise ExpectedError("camera not ready")

    async def end_enable(self, params: NoParams) -> None:
        if "end_enable" in self.failing:
            raise RuntimeError("end hook broke")


@pytest.mark.parametrize("hook", ["begin_enable", "end_enable"])
async def test_failing_hook_leaves_state_unchanged(
    broker: Connector, index: int, hook: str
) -> None:
    """A begin or end hook that fails leaves the CSC where it was."""

    def factory(i: int, **kwargs: Any) -> HookedCsc:
        csc = HookedCsc(i, **kwargs)
        csc.failing = {hook}
        return csc

    async with make_csc(factory, broker, index=index) as h:
        await h.remote.command("start")
        ack = await h.remote.command("enable", check=False)
        assert ack.code is AckCode.FAILED
        assert h.csc.state is State.DISABLED
        assert ("camera not ready" if hook == "begin_enable" else "end hook broke") in ack.result
        assert (await h.remote.next_event("summaryState")).data["name"] == "DISABLED"


async def test_set_log_level_filters_published_logs(broker: Connector, index: int) -> None:
    """Records below the level are not published; at or above they are."""
    async with make_csc(TestCsc, broker, index=index) as h:
        async with h.remote.stream("logMessage") as logs:
            h.csc.log.debug("hidden at INFO")
            h.csc.log.info("shown at INFO")
            assert (await logs.next(5)).data["message"] == "shown at INFO"
        await h.remote.command("setLogLevel", {"level": 10})
        async with h.remote.stream("logMessage") as logs:
            h.csc.log.debug("a detail", item=3)
            record = await logs.next(5)
        assert record.data["message"] == "a detail item=3"
        assert record.data["level"] == 10
        assert record.data["functionName"] == "test_set_log_level_filters_published_logs"
        out_of_range = await h.remote.command("setLogLevel", {"level": 99}, check=False)
        assert "level must be 0-50" in out_of_range.result


async def test_telemetry_and_events_carry_seq_and_time(broker: Connector, index: int) -> None:
    """Every event and telemetry message has a per-topic seq from 1 and sent_tai."""
    async with make_csc(TestCsc, broker, index=index) as h:
        await enabled(h)
        async with (
            h.remote.stream("scalars") as events,
            h.remote.stream("scalars", Kind.TELEMETRY) as telemetry,
        ):
            for value in (1, 2):
                await h.remote.command("setScalars", {"value": value, "text": "t"})
            first, second = await events.next(5), await events.next(5)
            tel = await telemetry.next(5)
        assert (first.seq, second.seq) == (1, 2)
        assert second.data["value"] == 2
        assert tel.data["value"] == 1
        assert first.sent_tai > 1.7e9  # TAI Unix seconds, not a monotonic clock
