"""The Telemetry Gateway's DM health rules, verdict by verdict; and the watch that feeds
them what the bus says, which follows (and lets go of) its own subscriptions only."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from cscs.core import generic as g
from cscs.core.protocol import encode
from cscs.core.states import State
from cscs.core.tasks import cancel_and_wait
from cscs.core.testing import MemoryBroker
from cscs.core.topics import CscAddress
from cscs.telemetry_gateway.alarms import Alarm, Alarms, Severity
from cscs.telemetry_gateway.health import DmHealth, HealthConfig, Verdict
from cscs.telemetry_gateway.watching import HealthWatch

LOG = structlog.get_logger("test")

CONFIG = HealthConfig(watched=["Archiver:1", "OCSBatch:0"], heartbeat_timeout=10.0,
                      qc_timeout=600.0)  # fmt: skip


def verdict(health: DmHealth, name: str, now: float, night: bool = True) -> Verdict:
    return next(v for v in health.verdicts(now, night) if v.name == name)


def test_a_fault_is_critical_silence_serious_and_idle_at_night_a_warning() -> None:
    health = DmHealth(CONFIG, now=0.0)
    for csc in ("Archiver:1", "OCSBatch:0"):
        health.state(csc, State.ENABLED)
        health.heartbeat(csc, 1.0)
    assert verdict(health, "dm.Archiver:1", 5.0).severity is Severity.NONE
    health.state("Archiver:1", State.FAULT)
    assert verdict(health, "dm.Archiver:1", 5.0) == Verdict(
        "dm.Archiver:1", Severity.CRITICAL, "Archiver:1 is in FAULT"
    )
    health.state("Archiver:1", State.DISABLED)
    assert verdict(health, "dm.Archiver:1", 5.0).severity is Severity.WARNING
    assert verdict(health, "dm.Archiver:1", 5.0, night=False).severity is Severity.NONE
    # Heartbeats stop: SERIOUS once the timeout has passed, whatever the state said.
    assert verdict(health, "dm.OCSBatch:0", 10.9).severity is Severity.NONE
    silent = verdict(health, "dm.OCSBatch:0", 11.0)
    assert (silent.severity, silent.reason) == (
        Severity.SERIOUS, "no heartbeat from OCSBatch:0 for 10 s"
    )  # fmt: skip
    health.heartbeat("OCSBatch:0", 11.5)
    assert verdict(health, "dm.OCSBatch:0", 12.0).severity is Severity.NONE


def test_a_csc_never_heard_is_silent_from_the_gateways_start() -> None:
    health = DmHealth(CONFIG, now=100.0)
    assert verdict(health, "dm.OCSBatch:0", 109.0).severity is Severity.NONE
    assert verdict(health, "dm.OCSBatch:0", 110.0).severity is Severity.SERIOUS


def test_a_retrieval_failure_is_serious_until_a_later_image_is_archived() -> None:
    health = DmHealth(CONFIG, now=0.0)
    health.retrieval_failed("Archiver:1", "AT_O_20261121_000005", "R00_S00: DAQ timeout")
    found = verdict(health, "dm.Archiver:1.retrieval", 1.0)
    assert found.severity is Severity.SERIOUS
    assert found.reason == "AT_O_20261121_000005 not archived: R00_S00: DAQ timeout"
    health.archived("Archiver:1", "AT_O_20261121_000004", 2.0)  # an earlier one: no
    assert verdict(health, "dm.Archiver:1.retrieval", 2.0).severity is Severity.SERIOUS
    health.archived("Archiver:1", "CC_O_20261122_000001", 2.5)  # another camera's: no
    assert verdict(health, "dm.Archiver:1.retrieval", 2.5).severity is Severity.SERIOUS
    health.archived("Archiver:1", "AT_O_20261121_000006", 3.0)
    assert verdict(health, "dm.Archiver:1.retrieval", 3.0).severity is Severity.NONE
    health.retrieval_failed("Archiver:1", "AT_O_20261121_000007", "DAQ timeout")
    health.archived("Archiver:1", "AT_O_20261121_000007", 4.0)  # caught up at last
    assert verdict(health, "dm.Archiver:1.retrieval", 4.0).severity is Severity.NONE


def test_images_without_qc_for_too_long_are_a_warning_until_qc_is_heard() -> None:
    health = DmHealth(CONFIG, now=0.0)
    assert verdict(health, "dm.qc", 5000.0).severity is Severity.NONE  # nothing archived
    health.archived("Archiver:1", "AT_O_20261121_000001", 100.0)
    health.archived("Archiver:1", "AT_O_20261121_000002", 400.0)
    assert verdict(health, "dm.qc", 699.0).severity is Severity.NONE
    late = verdict(health, "dm.qc", 700.0)
    assert (late.severity, late.reason) == (
        Severity.WARNING, "images archived for 10 min without image QC"
    )  # fmt: skip
    health.qc_stage()
    assert verdict(health, "dm.qc", 701.0).severity is Severity.NONE
    off = DmHealth(HealthConfig(qc_timeout=0.0), now=0.0)
    off.archived("Archiver:1", "AT_O_20261121_000001", 0.0)
    assert verdict(off, "dm.qc", 1e6).severity is Severity.NONE


async def test_the_watch_hears_its_cscs_and_lets_go_of_its_own_subscriptions_only() -> None:
    """The watch on a bus, as the gateway gives it one: a watched archiver's FAULT is a
    CRITICAL alarm. Told to watch nothing, then closed, it stops its readers (the test's
    task guard would see one left) and leaves what else listens on that bus hearing."""
    archiver = CscAddress("Archiver", 1, "site")
    announced: asyncio.Queue[Alarm] = asyncio.Queue()

    async def announce(changed: Sequence[Alarm]) -> None:
        for alarm in changed:
            announced.put_nowait(alarm)

    watch = HealthWatch(prefix="site", alarms=Alarms(), announce=announce,
                        enabled=lambda: True, log=LOG, name="TelemetryGateway:0")  # fmt: skip
    config = HealthConfig(watched=["Archiver:1"], night="always", qc_timeout=0.0,
                          judge_interval=0.1)  # fmt: skip
    fault = {"summaryState": int(State.FAULT), "name": "FAULT", "seq": 1, "sent_tai": 1.8e9}
    async with (
        MemoryBroker().transport() as bus,
        bus.subscription(archiver.event(g.HEARTBEAT.name)) as beside,
    ):
        await watch.configure(config, bus)
        judging = asyncio.create_task(watch.judge())
        try:
            await bus.publish(archiver.event(g.SUMMARY_STATE.name), encode(fault))
            while (alarm := await asyncio.wait_for(announced.get(), 10)).name != "dm.Archiver:1":
                pass
            assert (alarm.severity, alarm.reason) == (Severity.CRITICAL, "Archiver:1 is in FAULT")
            await watch.configure(HealthConfig(watched=[]), bus)
            await watch.close()
        finally:
            await cancel_and_wait([judging], LOG, "test over")
        await bus.publish(archiver.event(g.HEARTBEAT.name), encode({"seq": 2, "sent_tai": 1.8e9}))
        assert (await beside.get(10)).topic == archiver.event(g.HEARTBEAT.name)
