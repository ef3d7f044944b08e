"""`cscs ocs command TARGET CMD key=value …`: what an operator types is what the CSC is
sent, typed as the command declares it."""

from __future__ import annotations

import json

import pytest

from cscs.cli import _text_params
from cscs.ocs.command import parse_params


def test_values_that_read_as_json_are_sent_as_json() -> None:
    assert parse_params(["level=10", "flag=true", 'name="x"', "free=a b"]) == {
        "level": 10, "flag": True, "name": "x", "free": "a b"}  # fmt: skip


def test_a_query_with_equals_signs_and_quotes_is_one_value() -> None:
    query = "dataQuery=instrument = 'LATISS' AND exposure.seq_num IN (1..10)"
    assert parse_params([query]) == {
        "dataQuery": "instrument = 'LATISS' AND exposure.seq_num IN (1..10)"}  # fmt: skip


def test_ocs_batch_s_config_stays_the_json_text_it_must_be() -> None:
    text = _text_params("OCSBatch", "execute")
    assert {"config", "dataQuery", "pipeline"} <= text
    typed = 'config={"bind": {"inst": "LSSTComCam", "dets": [0, 4]}}'
    params = parse_params(["pipeline=image-qc", typed], text)
    assert isinstance(params["config"], str)
    assert json.loads(params["config"]) == {"bind": {"inst": "LSSTComCam", "dets": [0, 4]}}


def test_a_csc_or_command_not_installed_here_keeps_json_values() -> None:
    assert _text_params("NoSuchCsc", "execute") == frozenset()
    assert _text_params("OCSBatch", "noSuchCommand") == frozenset()
    assert parse_params(['config={"a": 1}'], frozenset()) == {"config": {"a": 1}}


@pytest.mark.parametrize("item", ["novalue", "=3"])
def test_an_item_without_key_and_value_is_refused_showing_how(item: str) -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_params([item])
