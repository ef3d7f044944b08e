"""What the Telemetry Gateway takes from the DM side (issue 29): a DM service written
from the ICD alone, its payloads carrying ``seq`` and ``sent_tai`` (§1; 1.2 says so for
DM-internal topics too), is accepted and its gaps reported (item 14); QC or a stage for
an image of a day to come is refused, by the rule the gateway applies to every image
name it is told of (item 12). On the in-memory bus: the offline tier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cscs.camera.naming import taken_by
from cscs.core.sequence import SequenceGaps, SequenceNumbers
from cscs.core.testing import MemoryBroker
from cscs.core.transport import Message
from cscs.telemetry_gateway.csc import TelemetryGatewayCsc
from cscs.telemetry_gateway.inputs import DmInputError, parse_dm_message
from tests.test_telemetry_gateway import IMAGE, gateway, summary

NOW = 1_796_086_400.0  # 2026-11-30 17:33, in the night of 20261130 (TAI seconds)
FUTURE = "AT_O_20991121_000001"


def stage(image: str = IMAGE, **changes: Any) -> dict[str, Any]:
    return {"imageName": image, "stage": "image-qc", "status": "measured",
            "description": "1 detector"} | changes  # fmt: skip


async def heard(csc: TelemetryGatewayCsc, topic: str, payload: dict[str, Any]) -> None:
    """One DM message, as the gateway's reader hands it on."""
    await csc.heard(Message(topic, json.dumps(payload).encode()), topic.split("/")[0])


# ---- item 14: the ICD's envelope ------------------------------------------------------


def test_a_dm_payload_with_the_icds_envelope_is_accepted() -> None:
    for topic, payload in ((f"dm/qc/LATISS/{IMAGE}", summary()), ("dm/status/image-qc", stage())):
        message = parse_dm_message(topic, json.dumps(payload | {"seq": 7}).encode(), "dm", 65_536)
        assert message is not None
        assert message.seq == 7
        assert "seq" not in message.payload.model_dump()  # the OCS side numbers its own
    for seq in (-1, 1.5, True, "7"):
        with pytest.raises(DmInputError, match="seq"):
            parse_dm_message("dm/status/image-qc", json.dumps(stage(seq=seq)).encode(), "dm",
                             65_536)  # fmt: skip


async def test_a_dm_service_written_from_the_icd_is_heard_and_its_gaps_reported(
    index: int, tmp_path: Path
) -> None:
    dm = f"dm{index}"
    async with (
        gateway(MemoryBroker(), index, tmp_path) as harness,
        harness.remote.stream("imageQuality") as qualities,
        harness.remote.stream("processingStatus") as stages,
    ):
        csc = harness.csc
        assert isinstance(csc, TelemetryGatewayCsc)
        await heard(csc, f"{dm}/qc/LATISS/{IMAGE}", summary() | {"seq": 1})
        for seq in (1, 2, 5, 6):  # 3 and 4 never came
            await heard(csc, f"{dm}/status/image-qc", stage(description=f"n{seq}", seq=seq))
        assert (await qualities.next()).data["imageName"] == IMAGE
        assert [(await stages.next()).data["description"] for _ in range(4)] == [
            "n1", "n2", "n5", "n6"
        ]  # fmt: skip
        assert csc.counts["refused"] == 0
        assert (csc.counts["forwarded"], csc.counts["missed"]) == (5, 2)
        # The service restarted: it counts from 1 again, and that is no loss.
        await heard(csc, f"{dm}/status/image-qc", stage(description="again", seq=1))
        assert csc.counts["missed"] == 2


def test_gaps_are_counted_per_topic_bounded_and_a_restart_is_no_gap() -> None:
    gaps = SequenceGaps(topics=2)
    assert [gaps.heard("a", n) for n in (1, 2, 4, 5)] == [0, 0, 1, 0]
    assert [gaps.heard("b", n) for n in (3, 10)] == [0, 6]  # heard first at 3: no gap
    assert gaps.heard("a", 1) == 0  # a restart
    assert gaps.heard("a", 0) == 0  # not numbered: nothing to say
    assert gaps.heard("c", 1) == 0  # "b" forgotten, the least recently heard
    assert gaps.heard("b", 20) == 0  # as if first heard; "a" forgotten
    assert gaps.heard("c", 3) == 1


def test_a_publisher_numbers_each_topic_from_one_within_a_bound() -> None:
    numbers = SequenceNumbers(topics=2)
    assert [numbers.next(t) for t in ("a", "a", "b", "a")] == [1, 2, 1, 3]
    assert numbers.next("c") == 1  # "b" forgotten
    assert (numbers.next("b"), numbers.next("c")) == (1, 2)


# ---- item 12: an image of a day to come -----------------------------------------------


def test_one_rule_judges_every_image_name_the_gateway_is_told_of() -> None:
    assert taken_by("AT_O_20261130_000001", NOW)
    assert taken_by("AT_O_20261201_000001", NOW)  # a day's grace for clocks
    assert not taken_by("AT_O_20261203_000001", NOW)
    for topic, payload in (
        (f"dm/qc/LATISS/{FUTURE}", summary(FUTURE)),
        ("dm/status/image-qc", stage(FUTURE)),
    ):
        with pytest.raises(DmInputError, match=f"{FUTURE} is dated a day to come"):
            parse_dm_message(topic, json.dumps(payload).encode(), "dm", 65_536, NOW)


async def test_qc_for_an_image_of_a_day_to_come_is_refused_and_raises_no_alarm(
    index: int, tmp_path: Path
) -> None:
    dm = f"dm{index}"
    async with (
        gateway(MemoryBroker(), index, tmp_path) as harness,
        harness.remote.stream("imageQuality") as qualities,
    ):
        csc = harness.csc
        assert isinstance(csc, TelemetryGatewayCsc)
        await heard(csc, f"{dm}/qc/LATISS/{FUTURE}", summary(FUTURE, seeing=5.0))
        await heard(csc, f"{dm}/status/image-qc", stage(FUTURE))
        await heard(csc, f"{dm}/qc/LATISS/{IMAGE}", summary())
        assert (await qualities.next()).data["imageName"] == IMAGE  # the first forwarded
        assert (csc.counts["refused"], csc.counts["forwarded"]) == (2, 1)
        assert not csc.alarms.not_nominal()
