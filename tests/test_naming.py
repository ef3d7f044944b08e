"""Image names: day of observation, and sequence numbers across restarts and days."""

from __future__ import annotations

import calendar
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cscs.camera import files
from cscs.camera.naming import ImageName, day_obs
from cscs.core.errors import ExpectedError
from sim.daq.sequence import ImageSequencer


def tai(text: str) -> float:
    """Unix-epoch seconds of a 'YYYY-MM-DD HH:MM:SS' TAI time."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


def test_day_of_observation_changes_at_noon() -> None:
    assert day_obs(tai("2026-11-21 11:59:59")) == "20261120"
    assert day_obs(tai("2026-11-21 12:00:00")) == "20261121"
    assert day_obs(tai("2026-11-22 03:00:00")) == "20261121"  # same night


def test_name_format_and_parse() -> None:
    name = ImageName("AT", "O", "20261121", 42)
    assert str(name) == "AT_O_20261121_000042"
    assert ImageName.parse("AT_O_20261121_000042") == name
    for bad in ("AT_O_20261121_42", "XX_O_20261121_000001", "AT_O_2026112_000001", ""):
        with pytest.raises(ValueError, match="not an image name"):
            ImageName.parse(bad)


def test_sequence_survives_restart_and_restarts_each_day(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    night = tai("2026-11-21 23:00:00")
    first = ImageSequencer(path, "CC")
    assert str(first.next(night)) == "CC_O_20261121_000001"
    assert str(first.next(night + 20)) == "CC_O_20261121_000002"
    restarted = ImageSequencer(path, "CC")  # a new process reads what was recorded
    assert str(restarted.next(night + 40)) == "CC_O_20261121_000003"
    next_day = tai("2026-11-22 12:00:01")
    assert str(restarted.next(next_day)) == "CC_O_20261122_000001"
    assert str(ImageSequencer(path, "CC").next(next_day + 1)) == "CC_O_20261122_000002"


def test_sequence_refuses_a_clock_that_went_back_a_day(tmp_path: Path) -> None:
    sequencer = ImageSequencer(tmp_path / "seq.json", "AT")
    sequencer.next(tai("2026-11-22 13:00:00"))
    with pytest.raises(ExpectedError, match="clock went back"):
        sequencer.next(tai("2026-11-21 13:00:00"))


def test_sequence_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    path.write_text("{not json")
    with pytest.raises(ExpectedError, match=r"seq\.json is unreadable"):
        ImageSequencer(path, "AT")
    path.write_text('{"last": "CC_O_20261121_000001"}')
    with pytest.raises(ExpectedError, match="belongs to CC_O"):
        ImageSequencer(path, "AT")
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ExpectedError, match="cannot read image sequence file"):
        ImageSequencer(blocked / "seq.json", "AT")  # its directory is a file


def test_a_name_that_cannot_be_recorded_is_not_issued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sequencer = ImageSequencer(tmp_path / "seq.json", "AT")
    first = sequencer.next(tai("2026-11-21 13:00:00"))

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "write_atomically", disk_full)
    with pytest.raises(ExpectedError, match=r"cannot record image sequence.*No space left"):
        sequencer.next(tai("2026-11-21 13:01:00"))
    assert sequencer.last == first  # nothing issued that was not recorded
    monkeypatch.undo()
    assert sequencer.next(tai("2026-11-21 13:02:00")).seq_num == 2


@given(steps=st.lists(st.floats(min_value=0, max_value=3 * 86400), min_size=1, max_size=40))
def test_names_never_repeat_as_time_moves_forward(
    tmp_path_factory: pytest.TempPathFactory, steps: list[float]
) -> None:
    path = tmp_path_factory.mktemp("seq") / "seq.json"
    now = tai("2026-11-21 18:00:00")
    names = []
    for step in steps:
        now += step
        names.append(str(ImageSequencer(path, "MC").next(now)))  # a restart every time
    assert len(set(names)) == len(names)
    assert names == sorted(names)
