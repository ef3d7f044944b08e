"""TelemetryGateway:0 on real brokers (embedded amqtt and Mosquitto): QC and stages
from the DM side forwarded once, alarms raised, acknowledged and muted as the Watcher
would, and hostile DM-side input refused with the gateway unmoved."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cscs.core import generic as g
from cscs.core.broker import EmbeddedBroker, find_mosquitto
from cscs.core.protocol import AckCode, encode
from cscs.core.remote import EventStream, Parsed, Remote
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.testing import CscHarness, MemoryBroker, TestCsc, enabled_csc, make_csc
from cscs.core.topics import CscAddress
from cscs.core.transport import Connector, Message, Transport
from cscs.ocs.alarms import alarm_line, alarms_table, show_alarms
from cscs.telemetry_gateway.alarms import Severity
from cscs.telemetry_gateway.csc import TelemetryGatewayCsc
from cscs.telemetry_gateway.inputs import DmInputError, message_key, parse_dm_message
from cscs.telemetry_gateway.interface import IMAGE_QUALITY, ImageQuality
from cscs.telemetry_gateway.outbox import Outbox

pytestmark = pytest.mark.timeout(180)

IMAGE = "AT_O_20261121_000008"


def summary(image: str = IMAGE, seeing: float | None = 0.7, **changes: Any) -> dict[str, Any]:
    """An image's QC summary as OCS Batch publishes it."""
    return {"imageName": image, "instrument": "LATISS", "nSensors": 1, "psfFwhm": seeing,
            "psfFwhmMin": seeing, "psfFwhmMax": seeing, "psfE1": 0.01, "psfE2": -0.01,
            "ellipticity": 0.014, "skyMean": 40.2, "skyRms": 6.5, "zeroPoint": 27.53,
            "nSources": 102, "jobId": "20261121-3fa2c1d9", "sent_tai": 1.8e9} | changes  # fmt: skip


@contextlib.asynccontextmanager
async def gateway(
    broker: Connector, index: int, tmp_path: Path, **config: Any
) -> AsyncIterator[CscHarness]:
    # No DM CSC watched unless a test asks: the defaults' would fall silent after 10 s.
    values = {"dm_prefix": f"dm{index}", "mute_check_interval": 0.05,
              "health": {"watched": []}} | config  # fmt: skip
    async with enabled_csc(TelemetryGatewayCsc, broker, tmp_path, f"g{index}", values) as h:
        yield h


async def publish(harness: CscHarness, topic: str, payload: dict[str, Any] | bytes) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    assert await harness.bus.publish(topic, data, qos=1)


async def test_qc_and_stages_are_forwarded_once_and_alarms_follow_the_seeing(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    dm = f"dm{index}"
    async with (
        gateway(site_broker, index, tmp_path) as harness,
        harness.remote.stream() as events,
        harness.remote.stream("alarm") as alarms,
        harness.remote.stream("alarms") as listing,
    ):
        await publish(harness, f"{dm}/qc/LATISS/{IMAGE}", summary())
        await publish(harness, f"{dm}/qc/LATISS/{IMAGE}", summary())  # QoS 1 redelivered
        await publish(harness, f"{dm}/status/image-qc", {
            "imageName": IMAGE, "stage": "image-qc", "status": "measured",
            "description": '1 detector, seeing 0.70"', "sent_tai": 1.8e9})  # fmt: skip
        quality = await events.wait_for(lambda r: r.name == "imageQuality")
        expected = summary()
        del expected["jobId"], expected["sent_tai"]
        assert {k: quality.data[k] for k in expected} == expected
        stage = await events.wait_for(lambda r: r.name == "processingStatus")
        assert (stage.data["imageName"], stage.data["status"]) == (IMAGE, "measured")
        # Bad seeing: SERIOUS (the default rule: warning 1.2", serious 1.5").
        await publish(harness, f"{dm}/qc/LATISS/AT_O_20261121_000009",
                      summary("AT_O_20261121_000009", 1.6))  # fmt: skip
        alarm = await alarms.wait_for(lambda r: True)
        assert (alarm.data["name"], alarm.data["severity"], alarm.data["maxSeverity"]) == (
            "qc.seeing", 3, 3,
        )  # fmt: skip
        assert (
            "psfFwhm 1.6 (AT_O_20261121_000009) above the SERIOUS level 1.5" in alarm.data["reason"]
        )
        listed = await listing.wait_for(lambda r: r.data["alarms"] != "[]")
        assert [a["name"] for a in json.loads(listed.data["alarms"])] == ["qc.seeing"]
        # What the night staff see: `cscs ocs alarms`.
        out = io.StringIO()
        assert await show_alarms(harness.bus, f"g{index}", out) == 0
        row = next(line for line in out.getvalue().splitlines() if line.startswith("qc.seeing"))
        assert row.split()[1:4] == ["SERIOUS", "SERIOUS", "ACTIVE"]
        assert row.endswith("above the SERIOUS level 1.5")
        # Only one imageQuality for the first image, though it came twice.
        assert harness.csc.counts["duplicate"] == 1  # type: ignore[attr-defined]
        assert harness.csc.counts["forwarded"] == 3  # type: ignore[attr-defined]

        below = {"name": "qc.*", "severity": 2, "acknowledgedBy": "night staff"}
        refused = await harness.remote.command("acknowledge", below, check=False)
        assert refused.code is AckCode.FAILED
        assert "cannot acknowledge at WARNING" in refused.result
        assert "qc.seeing (SERIOUS)" in refused.result
        await harness.remote.command("acknowledge", {
            "name": "qc.seeing", "severity": 3, "acknowledgedBy": "night staff"})  # fmt: skip
        acknowledged = await alarms.wait_for(lambda r: r.data["acknowledged"])
        assert acknowledged.data["acknowledgedBy"] == "night staff"
        # The seeing recovers: an acknowledged alarm that clears is nominal, and gone.
        await publish(harness, f"{dm}/qc/LATISS/AT_O_20261121_000010",
                      summary("AT_O_20261121_000010", 0.8))  # fmt: skip
        cleared = await alarms.wait_for(lambda r: r.data["severity"] == 1)
        assert cleared.data["maxSeverity"] == 1
        await listing.wait_for(lambda r: r.data["alarms"] == "[]")


async def test_each_dm_message_is_queued_once_acknowledged_and_held_while_disabled(
    index: int, tmp_path: Path
) -> None:
    """The reader's contract, message by message: queued, then acknowledged (a
    redelivery too, queued nothing); a disabled gateway still queues and holds what it
    queued, and sends it when enabled; in STANDBY it reads nothing."""
    acks: list[str] = []
    data = json.dumps(summary()).encode()
    topic = f"dm{index}/qc/LATISS/{IMAGE}"

    def message() -> Message:
        return Message(topic, data, ack=lambda: acks.append(topic))

    async with (
        gateway(MemoryBroker(), index, tmp_path) as harness,
        harness.remote.stream("imageQuality") as qualities,
    ):
        csc = harness.csc
        assert isinstance(csc, TelemetryGatewayCsc)
        outbox = csc.link.outbox
        assert outbox is not None
        await harness.remote.command("disable")
        await csc.heard(message(), f"dm{index}")
        await csc.heard(message(), f"dm{index}")  # QoS 1 redelivered
        assert acks == [topic, topic]
        assert (csc.counts["forwarded"], csc.counts["duplicate"]) == (1, 1)
        assert (await asyncio.to_thread(outbox.status))[0] == 1  # held, on disk
        await harness.remote.command("enable")
        quality = await qualities.next()
        assert (quality.data["imageName"], quality.data["seq"]) == (IMAGE, 1)
        await harness.remote.command("disable")
        await harness.remote.command("standby")
        # Not read in STANDBY (a real DM broker keeps it for the next start; this one,
        # in memory, keeps nothing): once enabled again, the next image is the first out.
        unread, after = "AT_O_20261121_000009", "AT_O_20261121_000010"
        await publish(harness, f"dm{index}/qc/LATISS/{unread}", summary(unread))
        await harness.remote.command("start", {"configurationOverride": "test"})
        await harness.remote.command("enable")
        await publish(harness, f"dm{index}/qc/LATISS/{after}", summary(after))
        assert (await qualities.next()).data["imageName"] == after
        assert csc.counts["forwarded"] == 2


@pytest.mark.broker
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
async def test_a_queue_that_cannot_be_written_faults_the_gateway_and_loses_nothing(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk is full as a QC summary comes: FAULT, with the cause in errorCode; the
    message is not acknowledged, so the DM broker sends it again when the reader starts
    again (a second later, still in FAULT, where the queue is held); once the operator
    has the gateway back (standby, start, enable) it reaches the OCS side, once."""
    real_put = Outbox.put
    failures = iter([sqlite3.OperationalError("database or disk is full")])

    def full_disk(self: Outbox, *args: Any, **kwargs: Any) -> tuple[int, int] | None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_put(self, *args, **kwargs)

    async with (
        EmbeddedBroker("mosquitto") as broker,  # amqtt keeps nothing for a session
        gateway(broker, index, tmp_path) as harness,
        harness.remote.stream() as events,
    ):
        monkeypatch.setattr(Outbox, "put", full_disk)
        await publish(harness, f"dm{index}/qc/LATISS/{IMAGE}", summary())
        error = await events.wait_for(lambda r: r.name == "errorCode")
        assert "database or disk is full" in error.data["errorReport"]
        await harness.remote.wait_for_state(State.FAULT)
        await harness.remote.command("standby")
        await harness.remote.command("start", {"configurationOverride": "test"})
        await harness.remote.command("enable")
        quality = await events.wait_for(lambda r: r.name == "imageQuality", timeout=30)
        assert (quality.data["imageName"], quality.data["seq"]) == (IMAGE, 1)
        await publish(harness, f"dm{index}/qc/LATISS/AT_O_20261121_000009",
                      summary("AT_O_20261121_000009"))  # fmt: skip
        after = await events.wait_for(lambda r: r.name == "imageQuality")
        assert after.data["imageName"] == "AT_O_20261121_000009"  # the first came once


async def test_a_stale_alarm_stays_listed_and_a_mute_ends_by_itself(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    dm = f"dm{index}"
    async with (
        gateway(site_broker, index, tmp_path) as harness,
        harness.remote.stream("alarm") as alarms,
        harness.remote.stream("alarms") as listing,
    ):
        for number, seeing in ((11, 2.2), (12, 0.7)):
            image = f"AT_O_20261121_0000{number}"
            await publish(harness, f"{dm}/qc/LATISS/{image}", summary(image, seeing))
        stale = await alarms.wait_for(lambda r: r.data["severity"] == 1)
        assert (stale.data["maxSeverity"], stale.data["acknowledged"]) == (4, False)
        listed = await listing.wait_for(lambda r: "qc.seeing" in r.data["alarms"])
        assert json.loads(listed.data["alarms"])[0]["maxSeverity"] == 4
        ack = await harness.remote.command("mute", {
            "name": "qc.seeing", "duration": 0.3, "severity": 4, "mutedBy": "staff"})  # fmt: skip
        assert ack.result == "muted 1 alarm(s) for 0.3 s"
        muted = await alarms.wait_for(lambda r: r.data["mutedSeverity"] == 4)
        assert muted.data["mutedBy"] == "staff"
        unmuted = await alarms.wait_for(lambda r: r.data["mutedSeverity"] == 1)
        assert unmuted.data["timestampUnmute"] == 0.0
        missing = await harness.remote.command("unmute", {"name": "ocs.*"}, check=False)
        assert (missing.code, missing.result) == (AckCode.FAILED, "no alarm matches 'ocs.*'")
        await harness.remote.command("acknowledge", {
            "name": "qc.seeing", "severity": 4, "acknowledgedBy": "staff"})  # fmt: skip
        await listing.wait_for(lambda r: r.data["alarms"] == "[]")


HOSTILE: list[bytes] = [
    b"not json at all",
    json.dumps(summary(seeing=float("nan"))).encode(),  # NaN, as Python's json writes it
    json.dumps(summary(nSources=10**30)).encode(),
    json.dumps(summary(psfFwhm="0.7")).encode(),  # a string for a number
    json.dumps(summary(colour="red")).encode(),  # a field the ICD does not define
    json.dumps(summary(image="AT_O_20261121_000099")).encode(),  # not the topic's image
    json.dumps([summary()]).encode(),
    b'{"imageName": "' + b"x" * 1_100_000 + b'"}',  # 1 MB
    b"\xff\xfe\x00garbage",
]


async def test_hostile_dm_input_is_refused_counted_and_the_gateway_carries_on(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    dm = f"dm{index}"
    async with (
        gateway(site_broker, index, tmp_path) as harness,
        harness.remote.stream() as events,
    ):
        for payload in HOSTILE:
            await publish(harness, f"{dm}/qc/LATISS/{IMAGE}", payload)
        await publish(harness, f"{dm}/status/image-qc", {"imageName": "../../etc", "stage":
                      "image-qc", "status": "measured"})  # fmt: skip
        await publish(harness, f"{dm}/qc/LATISS/{IMAGE}", summary())  # then a good one
        quality = await events.wait_for(lambda r: r.name == "imageQuality")
        assert quality.data["imageName"] == IMAGE
        counts = harness.csc.counts  # type: ignore[attr-defined]
        assert counts["refused"] == len(HOSTILE) + 1
        assert counts["forwarded"] == 1
        assert harness.csc.state is State.ENABLED
        assert not harness.csc.alarms.not_nominal()  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*summary(), "extra"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
                  st.lists(st.integers(), max_size=3)),
    )
)  # fmt: skip
def test_any_summary_is_forwarded_whole_and_sane_or_refused_with_a_reason(
    changes: dict[str, Any],
) -> None:
    data = json.dumps(summary() | changes).encode()
    try:
        message = parse_dm_message(f"dm/qc/LATISS/{IMAGE}", data, "dm", 65_536)
    except DmInputError as exc:
        assert str(exc), "a refusal says why"  # noqa: PT017
        return
    assert message is not None
    for name, value in message.payload.model_dump().items():
        assert not (isinstance(value, float) and not math.isfinite(value)), name


def test_a_detectors_metrics_are_not_forwarded_and_a_redelivery_is_recognised() -> None:
    assert parse_dm_message(f"dm/qc/LATISS/{IMAGE}/R00_S00", b"{}", "dm", 65_536) is None
    assert message_key("t", b"1") == message_key("t", b"1")  # a redelivery: the same bytes
    assert message_key("u", b"1") != message_key("t", b"1")  # another topic
    assert message_key("t", b"2") != message_key("t", b"1")


Seen = list[tuple[str, dict[str, Any]]]


def _latest_queued(seen: Seen, link: str) -> int | None:
    """What the latest linkStatus said waits (None before the first)."""
    said = [message for topic, message in seen if topic == link]
    return int(said[-1]["queued"]) if said else None


async def _consume(
    broker: EmbeddedBroker, client_id: str, topics: list[str], seen: Seen,
    arrived: asyncio.Condition, subscribed: asyncio.Event,
) -> None:  # fmt: skip
    """An OCS-side consumer with a persistent session (as the OCS's would be): what the
    broker queued for it while it was away, it gets when it is back."""
    while True:
        try:
            async with aiomqtt.Client(broker.host, broker.port, identifier=client_id,
                                      clean_session=False) as client:  # fmt: skip
                for topic in topics:
                    await client.subscribe(topic, qos=1)
                subscribed.set()
                async for message in client.messages:
                    seen.append((str(message.topic), json.loads(bytes(message.payload))))
                    async with arrived:
                        arrived.notify_all()
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)  # the broker is away: try again


class SteadyMetrics:
    """Image summaries published on the DM side at the steady rate of a night."""

    def __init__(self, dm: Transport, index: int, rate: float) -> None:
        self.dm, self.index, self.rate = dm, index, rate
        self.sent = 0

    async def publish_for(self, seconds: float) -> None:
        for _ in range(round(seconds * self.rate)):
            self.sent += 1
            image = f"AT_O_20261121_{self.sent:06d}"
            data = json.dumps(summary(image, sent_tai=float(self.sent))).encode()
            assert await self.dm.publish(f"dm{self.index}/qc/LATISS/{image}", data, qos=1)
            await asyncio.sleep(1.0 / self.rate)


def _every_one_once_in_order(seen: Seen, quality: str, link: str, sent: int) -> None:
    """Every imageQuality once, in order, seq without a gap; linkStatus said what
    waited, and last that nothing does."""
    metrics = [m for t, m in seen if t == quality]
    assert [m["imageName"] for m in metrics] == [
        f"AT_O_20261121_{n:06d}" for n in range(1, sent + 1)
    ]
    assert [m["seq"] for m in metrics] == list(range(1, sent + 1))
    statuses = [(m["connected"], m["queued"]) for t, m in seen if t == link]
    assert any(queued > 0 for _, queued in statuses), statuses
    assert statuses[-1] == (True, 0)


async def _until_read(dm: Transport, index: int, seen: Seen, arrived: asyncio.Condition,
                      status: str) -> None:  # fmt: skip
    """Until the gateway reads the DM side (a process started in ENABLED says so before
    its first DM session is made, and DM messages before that are nobody's): a stage,
    again, until the OCS side has it."""
    for attempt in range(1, 600):
        probe = {"imageName": IMAGE, "stage": "probe", "status": "ready", "sent_tai": attempt}
        assert await dm.publish(f"dm{index}/status/probe", json.dumps(probe).encode(), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.1), arrived:
                await arrived.wait_for(lambda: any(t == status for t, _ in seen))
                return
    raise AssertionError("the gateway never forwarded a stage from the DM side")


@pytest.mark.broker
@pytest.mark.long  # a 30 s outage of the OCS side, waited out: the long tier
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
async def test_an_outage_of_the_ocs_side_loses_nothing_and_reorders_nothing(
    index: int, tmp_path: Path
) -> None:
    """Metrics flow at a steady rate on the DM broker; the OCS-side broker (Mosquitto,
    keeping sessions) is stopped for 30 s and restarted on the same port. The OCS side
    gets every imageQuality once, in order, seq without a gap; linkStatus shows what
    waited, then the queue drained."""
    outage, rate = 30.0, 10.0
    ocs = EmbeddedBroker("mosquitto", persistence=True)
    dm_broker = EmbeddedBroker("amqtt")  # DM's own broker, which stays up
    gateway_address = CscAddress("TelemetryGateway", 0, f"g{index}")
    quality, link = gateway_address.event("imageQuality"), gateway_address.event("linkStatus")
    seen: Seen = []
    arrived, subscribed = asyncio.Condition(), asyncio.Event()
    async with ocs, dm_broker:
        consumer = asyncio.create_task(
            _consume(ocs, f"ocs-{index}", [quality, link], seen, arrived, subscribed)
        )
        try:
            async with asyncio.timeout(30):
                await subscribed.wait()
            async with (
                gateway(ocs, index, tmp_path, dm_broker=dm_broker.url) as harness,
                dm_broker.transport() as dm,
            ):
                # `start` has returned: the DM side is read from now on.
                metrics = SteadyMetrics(dm, index, rate)
                publish_for = metrics.publish_for

                await publish_for(3.0)
                await ocs.stop()
                await publish_for(outage)
                link_state = harness.csc.link  # type: ignore[attr-defined]
                assert not link_state.connected
                queued = await asyncio.to_thread(link_state.outbox.status)
                assert queued[0] >= outage * rate * 0.9  # what the outage held back, on disk
                await ocs.start()  # same port
                await publish_for(3.0)
                async with asyncio.timeout(60), arrived:
                    await arrived.wait_for(
                        lambda: sum(t == quality for t, _ in seen) >= metrics.sent
                    )
                    # ... and the link's latest word is that the queue is empty again.
                    await arrived.wait_for(lambda: _latest_queued(seen, link) == 0)
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
    _every_one_once_in_order(seen, quality, link, metrics.sent)


def _queued_on_disk(state_dir: Path) -> int:
    """How many messages a gateway process has in its queue file (read-only, as an
    operator's sqlite3 would)."""
    path = state_dir / "TelemetryGateway-0-outbox.sqlite"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


@pytest.mark.broker
@pytest.mark.long  # a 30 s outage of the OCS side, waited out: the long tier
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
async def test_a_gateway_killed_during_an_outage_loses_nothing_either(
    index: int, tmp_path: Path
) -> None:
    """As above, with `cscs run TelemetryGateway` SIGKILLed in the middle of the 30 s
    outage and started again at once (it waits for the OCS side, as a supervisor's
    restart would): what it had queued on disk, and what DM published while it was
    dead (the DM broker keeps it for the gateway's session), all arrive once, in
    order, each topic's seq going on without a gap."""
    outage, rate = 30.0, 10.0
    ocs = EmbeddedBroker("mosquitto", persistence=True)
    dm_broker = EmbeddedBroker("mosquitto")  # amqtt keeps nothing for a session away
    prefix, state = f"g{index}", tmp_path / "state"
    address = CscAddress("TelemetryGateway", 0, prefix)
    quality, link = address.event("imageQuality"), address.event("linkStatus")
    status = address.event("processingStatus")
    seen: Seen = []
    arrived, subscribed = asyncio.Condition(), asyncio.Event()
    processes: list[asyncio.subprocess.Process] = []
    async with ocs, dm_broker:
        configs = tmp_path / "config" / "TelemetryGateway"
        configs.mkdir(parents=True)
        (configs / "_init.yaml").write_text(yaml.safe_dump(
            {"dm_prefix": f"dm{index}", "dm_broker": dm_broker.url, "health": {"watched": []}}
        ))  # fmt: skip
        env = {**os.environ, "CSCS_STATE_DIR": str(state), "CSCS_PREFIX": prefix,
               "CSCS_CONFIG_DIR": str(tmp_path / "config")}  # fmt: skip
        logs = tmp_path / "gateway.log"

        async def run_gateway() -> None:
            with logs.open("ab") as log:
                processes.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "cscs", "run", "TelemetryGateway", "--broker", ocs.url,
                    "--state", "enabled", "--connect-timeout", "120", env=env,
                    stdout=log, stderr=log,
                ))  # fmt: skip

        consumer = asyncio.create_task(
            _consume(ocs, f"ocs-{index}", [quality, link, status], seen, arrived, subscribed)
        )
        try:
            async with asyncio.timeout(30):
                await subscribed.wait()
            await run_gateway()
            async with ocs.transport() as bus, Remote(bus, address) as remote:
                await remote.wait_for_state(State.ENABLED, 60)
            async with dm_broker.transport() as dm:
                await _until_read(dm, index, seen, arrived, status)
                metrics = SteadyMetrics(dm, index, rate)
                publish_for = metrics.publish_for

                await publish_for(3.0)
                await ocs.stop()
                await publish_for(outage / 2)
                assert _queued_on_disk(state) > 0, logs.read_text()  # what the kill must not lose
                processes[0].kill()  # no clean close: what it queued is on disk, or nowhere
                await processes[0].wait()
                await publish_for(2.0)  # while no gateway runs
                await run_gateway()
                await publish_for(outage / 2 - 2.0)
                await ocs.start()  # same port
                await publish_for(3.0)
                try:
                    async with asyncio.timeout(90), arrived:
                        await arrived.wait_for(
                            lambda: sum(t == quality for t, _ in seen) >= metrics.sent
                        )
                        await arrived.wait_for(lambda: _latest_queued(seen, link) == 0)
                except TimeoutError:
                    got = [int(m["imageName"][-6:]) for t, m in seen if t == quality]
                    missing = sorted(set(range(1, metrics.sent + 1)) - set(got))
                    pytest.fail(f"{len(got)} of {metrics.sent} came; missing {missing[:20]}; "
                                f"queued on disk: {_queued_on_disk(state)}")  # fmt: skip
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            for process in processes:
                if process.returncode is None:
                    process.terminate()
                    await process.wait()
    _every_one_once_in_order(seen, quality, link, metrics.sent)


def test_the_alarms_table_shows_states_and_nothing_a_forger_could_hide_in() -> None:
    now = 1_800_000_000.0
    listing = [
        {"name": "qc.seeing", "severity": 1, "maxSeverity": 3, "acknowledged": False,
         "reason": "", "mutedSeverity": 1, "timestampSeverityNewest": now - 90},
        {"name": "qc.zeroPoint", "severity": 2, "maxSeverity": 2, "acknowledged": True,
         "acknowledgedBy": "night staff", "mutedSeverity": 4, "reason": "zp\x1b[2J low",
         "timestampSeverityNewest": now - 600},
        {"name": "forged", "severity": "4", "maxSeverity": 99, "timestampSeverityNewest": "x"},
    ]  # fmt: skip
    lines = alarms_table(listing, now).splitlines()
    assert lines[0].split() == ["ALARM", "SEVERITY", "MAX", "STATE", "AGE", "REASON"]
    assert lines[1].split() == ["qc.seeing", "NONE", "SERIOUS", "stale", "90", "s"]
    assert "ack'd by night staff, muted to CRITICAL" in lines[2]
    assert "zp?[2J low" in lines[2]  # no escape sequence reaches the terminal
    assert lines[3].split()[:5] == ["forged", "?", "?", "ACTIVE", "?"]
    change = alarm_line({"name": "qc.seeing", "severity": 3, "maxSeverity": 3,
                         "reason": "psfFwhm 1.6"})  # fmt: skip
    assert change == "qc.seeing SERIOUS (max SERIOUS, ACTIVE): psfFwhm 1.6"


async def test_dm_csc_health_makes_alarms(broker: Connector, index: int, tmp_path: Path) -> None:
    """A watched DM CSC disabled at night: WARNING; enabled again: the alarm stale;
    FAULT: CRITICAL; gone silent: SERIOUS. An imageRetrievalFailed: SERIOUS until a later
    image is archived."""
    # The watched CSC beats four times a second: a 3 s silence (twelve beats) is never a
    # late beat, even with the test's event loop stalled on a loaded machine.
    health = {"watched": [f"Test:{index}", f"Archiver:{index}"], "heartbeat_timeout": 3.0,
              "judge_interval": 0.2, "qc_timeout": 0.0, "night": "always"}  # fmt: skip
    settings = Settings(prefix=f"g{index}")
    async with make_csc(
        TestCsc, broker, index=index, settings=settings, heartbeat_interval=0.25
    ) as watched:
        await watched.remote.command("start")  # ENABLED before the gateway looks
        await watched.remote.command("enable")
        async with (
            gateway(broker, index, tmp_path, health=health) as harness,
            harness.remote.stream("alarm") as alarms,
        ):
            await _health_transitions(watched, harness, alarms, index)


async def _health_transitions(
    watched: CscHarness, harness: CscHarness, alarms: EventStream, index: int
) -> None:
    name = f"dm.Test:{index}"
    await watched.remote.command("disable")
    idle = await alarms.wait_for(lambda r: r.data["name"] == name)
    assert (idle.data["severity"], idle.data["reason"]) == (
        2, f"Test:{index} is DISABLED during the night"
    )  # fmt: skip
    await watched.remote.command("enable")
    stale = await alarms.wait_for(lambda r: r.data["name"] == name)
    assert (stale.data["severity"], stale.data["maxSeverity"]) == (1, 2)
    await watched.csc.fault(1234, "a deliberate fault")
    fault = await alarms.wait_for(lambda r: r.data["name"] == name)
    assert (fault.data["severity"], fault.data["reason"]) == (4, f"Test:{index} is in FAULT")
    # The archiver (played by this test) could not archive an image, then did a later.
    archiver = CscAddress("Archiver", index, f"g{index}")
    failed = {"imageName": "AT_O_20261121_000005", "sensor": "R00_S00",
              "description": "R00_S00: DAQ read timed out", "seq": 1}  # fmt: skip
    await harness.bus.publish(archiver.event("imageRetrievalFailed"), encode(failed))
    retrieval = await alarms.wait_for(lambda r: r.data["name"].endswith(".retrieval"))
    assert retrieval.data["severity"] == 3
    assert "AT_O_20261121_000005 not archived: R00_S00" in retrieval.data["reason"]
    archived = {"imageName": "AT_O_20261121_000006", "sensor": "R00_S00", "seq": 1}
    await harness.bus.publish(archiver.event("imageArchived"), encode(archived))
    cleared = await alarms.wait_for(lambda r: r.data["name"].endswith(".retrieval"))
    assert cleared.data["severity"] == 1
    # No Archiver:{index} beats at all: silent since the gateway started.
    listing = harness.remote.stream("alarms")
    async with listing as alarms_now:
        await alarms_now.wait_for(lambda r: f'dm.Archiver:{index}"' in r.data["alarms"])
    silent = harness.csc.alarms.get(f"dm.Archiver:{index}")  # type: ignore[attr-defined]
    assert silent.severity == 3
    assert silent.reason == f"no heartbeat from Archiver:{index} for 3 s"


async def test_starting_again_the_health_watch_leaves_the_gateways_other_subscriptions(
    index: int, tmp_path: Path
) -> None:
    """``start`` again (the DM CSCs to watch read anew): the health watch lets go of what
    it followed, and only that. What else the gateway follows (here a heartbeat, with
    the CSC's own ``follow``) is still heard, and QC from the DM side still forwarded."""
    broker = MemoryBroker()
    settings = Settings(prefix=f"g{index}")
    health = {"watched": [f"Test:{index}"], "night": "never"}
    async with (
        make_csc(
            TestCsc, broker, index=index, settings=settings, heartbeat_interval=0.1
        ) as other,  # fmt: skip
        gateway(broker, index, tmp_path, health=health) as harness,
        harness.remote.stream("imageQuality") as forwarded,
    ):
        heard: asyncio.Queue[Parsed[g.Heartbeat]] = asyncio.Queue()
        await harness.csc.follow(other.csc.address, g.HEARTBEAT, heard.put_nowait)
        await asyncio.wait_for(heard.get(), 10)
        for command in ("disable", "standby"):
            await harness.remote.command(command)
        await harness.remote.command("start", {"configurationOverride": "test"})
        await harness.remote.command("enable")
        while not heard.empty():  # what came before the restart proves nothing
            heard.get_nowait()
        beat = await asyncio.wait_for(heard.get(), 10)
        assert beat.address == other.csc.address
        await publish(harness, f"dm{index}/qc/LATISS/{IMAGE}", summary())
        assert (await forwarded.next()).data["imageName"] == IMAGE


async def test_a_full_queue_drops_the_oldest_metrics_says_how_many_then_clears(
    index: int, tmp_path: Path
) -> None:
    """The OCS side away, more metrics than the queue holds: the oldest are dropped, a
    SERIOUS gateway.queue alarm counts them; once the queue drains it clears (stale)."""
    broker = MemoryBroker()
    async with (
        gateway(broker, index, tmp_path, queue_capacity=10, link_status_interval=0.1) as harness,
        harness.remote.stream("imageQuality") as forwarded,
        harness.remote.stream("alarm") as alarms,
    ):
        csc: TelemetryGatewayCsc = harness.csc  # type: ignore[assignment]
        broker.stop()  # the OCS side goes away
        for number in range(1, 16):
            image = f"AT_O_20261121_{number:06d}"
            quality = ImageQuality.model_validate({k: v for k, v in summary(image).items()
                                                   if k not in ("jobId", "sent_tai")})  # fmt: skip
            await csc.link.send(IMAGE_QUALITY, quality, droppable=True)
        await csc.link.report()
        alarm = csc.alarms.get("gateway.queue")
        assert alarm.severity is Severity.SERIOUS
        assert int(alarm.reason.split()[0]) >= 5  # "N queued messages dropped: …"
        broker.start()
        names: list[str] = []
        while not names or names[-1] != "AT_O_20261121_000015":
            names.append((await forwarded.next(30)).data["imageName"])
        numbers = [int(name[-6:]) for name in names]
        assert numbers == sorted(set(numbers))  # in order, once each
        lost = set(range(1, 16)) - set(numbers)
        # The oldest went (those the sender held already were sent: they were in flight).
        assert lost
        assert max(lost) < 10
        assert set(range(10, 16)) <= set(numbers)
        cleared = await alarms.wait_for(
            lambda r: r.data["name"] == "gateway.queue" and r.data["severity"] == 1, 30
        )
        assert cleared.data["maxSeverity"] == 3  # stale until someone has seen it
