"""The one ``imageRetrievalFailed`` an image's unreadable sensors come to: every sensor
named, in order, and the reasons listed up to a limit — so that a DAQ gone mid-image,
failing all 189 of LSSTCam's sensors at once, still makes one small event."""

from __future__ import annotations

from cscs.archiver.interface import retrieval_failed

IMAGE = "MC_O_20261121_000001"


def test_one_sensor_is_named_with_its_reason() -> None:
    event = retrieval_failed(IMAGE, {"R22_S11": "evicted from the DAQ"})
    assert (event.imageName, event.sensor) == (IMAGE, "R22_S11")
    assert event.description == "R22_S11: evicted from the DAQ"


def test_sensors_are_named_in_order_whatever_order_they_failed_in() -> None:
    event = retrieval_failed(IMAGE, {"R22_S11": "stalled", "R01_S00": "checksum mismatch"})
    assert event.sensor == "R01_S00,R22_S11"
    assert event.description == "R01_S00: checksum mismatch; R22_S11: stalled"


def test_ten_reasons_are_given_and_the_rest_counted() -> None:
    failures = {f"R{raft:02d}_S00": f"reason {raft}" for raft in range(12)}
    event = retrieval_failed(IMAGE, failures)
    assert event.sensor.split(",") == sorted(failures)  # every sensor named
    reasons = event.description.split("; ")
    assert reasons[:10] == [f"R{raft:02d}_S00: reason {raft}" for raft in range(10)]
    assert reasons[10:] == ["and 2 more"]


def test_ten_failures_are_all_given() -> None:
    failures = {f"R{raft:02d}_S00": "gone" for raft in range(10)}
    reasons = retrieval_failed(IMAGE, failures).description.split("; ")
    assert len(reasons) == 10
    assert not any("more" in reason for reason in reasons)
