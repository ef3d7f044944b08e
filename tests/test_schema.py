"""Received payloads read against their declarations: what is declared is checked
strictly, what a publisher adds is ignored, and every refusal names the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cscs.camera.events import StartIntegration
from cscs.core.schema import parse_payload

VALID: dict[str, Any] = {
    "imageName": "AT_O_20261121_000001", "imageIndex": 1, "imagesInSequence": 1,
    "imageSource": "AT", "imageController": "O", "imageDate": "20261121", "imageNumber": 1,
    "groupId": "", "imageType": "BIAS", "exposureTime": 0, "timestampAcquisitionStart": 1,
    "timeout": 30, "additionalKeys": "", "additionalValues": "",
}  # fmt: skip


def test_a_valid_payload_is_read_and_what_a_publisher_adds_is_ignored() -> None:
    event = parse_payload(StartIntegration, VALID | {"seq": 3, "sent_tai": 1.0, "extra": [1]})
    assert event.imageName == "AT_O_20261121_000001"
    assert event.exposureTime == 0.0
    assert isinstance(event.exposureTime, float)  # an integer where a float is declared


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"imageIndex": "1"}, "StartIntegration: imageIndex: Input should be a valid integer"),
        ({"imageName": None}, "StartIntegration: imageName: Input should be a valid string"),
        ({"exposureTime": True}, "StartIntegration: exposureTime: Input should be a valid number"),
    ],
)
def test_a_wrong_field_is_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_payload(StartIntegration, VALID | change)


def test_a_missing_field_is_named() -> None:
    without = {k: v for k, v in VALID.items() if k != "groupId"}
    with pytest.raises(ValueError, match="StartIntegration: groupId: Field required"):
        parse_payload(StartIntegration, without)


@given(data=st.dictionaries(
    st.sampled_from([*StartIntegration.model_fields, "seq", "extra"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=10)),
))  # fmt: skip
def test_any_payload_is_read_or_refused_naming_the_field(data: dict[str, Any]) -> None:
    try:
        event = parse_payload(StartIntegration, VALID | data)
    except ValueError as exc:
        field = str(exc).split(": ")[1]
        assert field in data, (field, data)  # only a field it was given can be wrong
        return
    for name in data.keys() & StartIntegration.model_fields.keys():
        assert getattr(event, name) == data[name]
