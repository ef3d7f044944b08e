"""Issue 29, item 16e: a bug in one of the dashboard model's handlers is a bug, not a
peer's malformed message: counted apart and logged with its traceback."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from cscs.core.remote import Received
from cscs.core.topics import CscAddress, Kind
from cscs.dashboard.model import NightModel

T0 = 1.8e9


def _alarm() -> Received:
    fields = {
        "seq": 1, "sent_tai": T0, "name": "qc.seeing", "severity": 3, "reason": "seeing",
        "maxSeverity": 3, "acknowledged": False, "acknowledgedBy": "", "mutedSeverity": 1,
        "mutedBy": "", "timestampSeverityNewest": T0, "timestampMaxSeverity": T0,
        "timestampAcknowledged": 0.0, "timestampUnmute": 0.0,
    }  # fmt: skip
    return Received(CscAddress("TelemetryGateway", 0, "dash"), Kind.EVENT, "alarm", fields)


def test_a_bug_in_a_handler_is_logged_with_its_traceback_and_not_called_malformed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(model: NightModel, alarm: Any) -> None:
        raise KeyError("a handler's own mistake")

    monkeypatch.setattr(NightModel, "_keep_alarm", broken)  # what the alarm handler calls
    model = NightModel()
    with capture_logs() as logs:
        model.feed(_alarm(), 1000.0, T0 + 60.0)
    assert (model.malformed, model.handler_errors) == (0, 1)
    [entry] = [e for e in logs if e["log_level"] == "error"]
    assert "a bug" in entry["event"]
    assert entry["topic"] == "alarm"
    assert entry.get("exc_info") is True  # structlog renders the traceback from it
