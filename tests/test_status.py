"""The operators' status board, fed with events, without a broker."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cscs.core.generic import HEARTBEAT
from cscs.core.remote import Received
from cscs.core.topics import CscAddress, Kind
from cscs.core.transport import Message
from cscs.ocs.status import MAX_CSCS, StatusBoard
from cscs.ocs.watch import describe

A = CscAddress("Archiver", 1)


def event(topic_name: str, sent_tai: float = 0.0, **data: Any) -> Received:
    return Received(A, Kind.EVENT, topic_name, data | {"seq": 1, "sent_tai": sent_tai})


def test_board_tracks_state_heartbeat_and_error() -> None:
    """State, heartbeat age, condition and last error per CSC."""
    board = StatusBoard()
    board.update(event("summaryState", 10.0, summaryState=2, name="ENABLED"), 100.0, tai=10.0)
    board.update(event("heartbeat"), now=101.0)
    board.update(event("errorCode", 11.0, errorCode=7, errorReport="disk full"), 101.0, tai=11.0)
    assert board.rows(now=102.0) == [
        ("Archiver:1", "ENABLED", "1.0 s", "alive", "-", "7: disk full")
    ]
    assert board.rows(now=105.0)[0][3] == "LOST (no heartbeat)"


def test_an_error_older_than_the_last_state_change_is_not_shown() -> None:
    """A CSC that went FAULT, then STANDBY and back to ENABLED no longer shows the
    error; one in FAULT shows it however old; a forged sent_tai from the future counts
    as the moment it arrived, so a real state change afterwards still hides it."""
    board = StatusBoard()
    board.update(event("heartbeat"), now=1.0)
    board.update(event("errorCode", 5.0, errorCode=6002, errorReport="disk"), 1.0, tai=5.0)
    board.update(event("summaryState", 6.0, summaryState=3, name="FAULT"), 1.0, tai=6.0)
    assert board.rows(now=1.0)[0][5] == "6002: disk"
    board.update(event("summaryState", 7.0, summaryState=5, name="STANDBY"), 1.0, tai=7.0)
    assert board.rows(now=1.0)[0][5] == "-"
    forged = event("errorCode", 1e12, errorCode=1, errorReport="forged")
    board.update(forged, 2.0, tai=8.0)
    assert board.rows(now=2.0)[0][5] == "1: forged"  # newer than the state, for now
    board.update(event("summaryState", 9.0, summaryState=1, name="DISABLED"), 2.0, tai=9.0)
    assert board.rows(now=2.0)[0][5] == "-"


def test_retained_state_without_a_heartbeat_is_not_trusted() -> None:
    """A retained state nobody's heartbeat confirms (a forgery for a CSC that does not
    exist, or one that died without a will) is shown in parentheses, flagged."""
    board = StatusBoard()
    ghost = CscAddress("Ghost", 7)
    state = {"summaryState": 2, "name": "ENABLED", "seq": 1, "sent_tai": 1.0}
    board.update(Received(ghost, Kind.EVENT, "summaryState", state, retained=True), 1.0)
    row = board.rows(now=3.0)[0]
    assert row[:4] == ("Ghost:7", "(ENABLED)", "-", "NO HEARTBEAT (state unconfirmed)")
    board.update(Received(ghost, Kind.EVENT, "heartbeat", {"seq": 1, "sent_tai": 2.0}), 3.0)
    assert board.rows(now=3.0)[0][1:4] == ("ENABLED", "0.0 s", "alive")


def test_an_empty_retained_error_clears_it() -> None:
    """A CSC clears a forged retained errorCode with an empty payload: gone from the board."""
    board = StatusBoard()
    board.update(event("summaryState", 1.0, summaryState=2, name="ENABLED"), 1.0, tai=1.0)
    board.update(event("errorCode", 2.0, errorCode=9, errorReport="forged"), 1.0, tai=2.0)
    assert board.rows(now=1.0)[0][5] == "9: forged"
    board.cleared(Message(A.event("errorCode"), b"", retain=True))
    assert board.rows(now=1.0)[0][5] == "-"


def test_last_will_shows_lost() -> None:
    """The last will (lost: true) shows as LOST at once."""
    board = StatusBoard()
    board.update(event("heartbeat"), now=1.0)
    board.update(event("summaryState", summaryState=4, name="OFFLINE", lost=True), now=1.5)
    assert board.rows(now=1.6)[0][1:4] == ("OFFLINE", "-", "LOST (last will)")
    assert "no CSC seen" in StatusBoard().render(0.0)


def test_board_shows_the_latest_image_of_each_camera_csc() -> None:
    """Camera: the last image read out; header service: described; archiver: archived;
    OODS: in the Butler repository."""
    board = StatusBoard()
    camera, header = CscAddress("Camera", 2), CscAddress("HeaderService", 2)
    oods = CscAddress("OODS", 2)
    board.update(Received(oods, Kind.EVENT, "imageInOODS", {"imageName": "CC_O_1"}), 2.0)
    board.update(Received(camera, Kind.EVENT, "endReadout", {"imageName": "CC_O_1"}), 1.0)
    board.update(Received(camera, Kind.EVENT, "endReadout", {"imageName": "CC_O_2"}), 2.0)
    board.update(Received(header, Kind.EVENT, "largeFileObjectAvailable", {"id": "CC_O_1"}), 2.0)
    board.update(event("imageArchived", imageName="AT_O_9", sensor="R00_S00"), now=2.0)
    board.update(event("imageArchived", imageName=None), now=2.5)  # malformed: ignored
    weather = CscAddress("Weather", 0)
    board.update(Received(weather, Kind.EVENT, "heartbeat", {}), 2.0)  # no images: "-"
    latest = {row[0]: row[4] for row in board.rows(now=3.0)}
    assert latest == {
        "Archiver:1": "AT_O_9", "Camera:2": "CC_O_2", "HeaderService:2": "CC_O_1",
        "OODS:2": "CC_O_1", "Weather:0": "-",
    }  # fmt: skip
    # retained: what a board started after the image sees first
    board.update(Received(camera, Kind.EVENT, "latestImage", {"imageName": "CC_O_3"}), 3.0)
    assert {row[0]: row[4] for row in board.rows(now=3.0)}["Camera:2"] == "CC_O_3"
    assert "LATEST IMAGE" in board.render(3.0)


def test_describe_is_one_readable_line() -> None:
    """watch prints state names and fields, not raw JSON."""
    assert describe(event("summaryState", summaryState=3, name="FAULT")) == (
        "Archiver:1 evt summaryState FAULT"
    )
    ack = Received(
        A, Kind.ACK, "", {"command": "enable", "seq": 3, "ack": "FAILED", "result": "no"}
    )
    assert describe(ack) == "Archiver:1 ack enable seq=3 FAILED: no"


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=2),
        st.integers().filter(lambda n: not 0 <= n < 2**63),
        st.just(10**400),
    ),
    st.one_of(st.none(), st.text(max_size=5), st.just(10**400), st.just(float("inf"))),
)
def test_a_seq_or_time_that_is_not_one_is_a_value_error(seq: Any, sent_tai: Any) -> None:
    """`parse` promises ValueError for a bad message (the readers of `cscs ocs alarms
    --follow` and `cscs ocs jobs` skip exactly that); a null, a list or a 400-digit seq
    must not escape as TypeError or OverflowError and end them."""
    for data in ({"seq": seq, "sent_tai": 1.0}, {"seq": 1, "sent_tai": sent_tai}):
        with pytest.raises(ValueError, match=r"seq|sent_tai"):
            Received(A, Kind.EVENT, "heartbeat", data).parse(HEARTBEAT)
    with pytest.raises(ValueError, match="sent_tai"):  # `cscs ocs status` skips it
        StatusBoard().update(Received(A, Kind.EVENT, "heartbeat", {"sent_tai": sent_tai}), 1.0)


# ---- issue 29 item 3: twenty thousand invented CSCs --------------------------------------


def _beat(name: str, index: int) -> Received:
    return Received(CscAddress(name, index), Kind.EVENT, "heartbeat", {"seq": 1, "sent_tai": 0.0})


def test_invented_addresses_neither_push_out_nor_outnumber_the_real_csc() -> None:
    """One heartbeat each from Camera:0..19999, while the real CSCs beat every second:
    the board stays bounded, the CSCs alive now keep their rows, and one that ran for
    long and died is still shown LOST (the one-heartbeat inventions go first)."""
    board = StatusBoard()
    real, dead = CscAddress("Weather", 0), CscAddress("Archiver", 1)
    for second in range(30):  # the dead one ran for 30 s before the attack
        board.update(_beat("Archiver", 1), now=float(second))
    now = 40.0
    for index in range(20_000):
        if index % 500 == 0:  # 20000 inventions spread over 40 s: the real one beats on
            now += 1.0
            board.update(_beat("Weather", 0), now=now)
        board.update(_beat("Camera", index), now=now)
    assert len(board.cscs) <= MAX_CSCS
    assert board.rows(now)[-1][0] == "Weather:0"
    assert board.cscs[real].condition(now) == "alive"
    assert board.cscs[dead].condition(now) == "LOST (no heartbeat)"
    assert board.forgotten + board.refused + len(board.cscs) >= 20_000
    assert len(board.render(now).splitlines()) <= MAX_CSCS + 2  # and the overflow line


def test_a_full_board_of_live_csc_refuses_a_new_address_and_counts_it() -> None:
    board = StatusBoard(max_cscs=3)
    for index in range(3):
        board.update(_beat("Camera", index), now=0.0)
    assert not board.update(_beat("Camera", 99), now=1.0)  # all three alive: not shown
    assert board.refused == 1
    assert CscAddress("Camera", 99) not in board.cscs
    assert board.update(_beat("Camera", 99), now=10.0)  # the three silent for 10 s now
    assert CscAddress("Camera", 99) in board.cscs
    assert len(board.cscs) == 3


def test_only_a_change_of_what_a_row_shows_is_reported() -> None:
    """A heartbeat of a CSC already alive moves nothing but its age (the clock moves
    that): no push, no re-sort per heartbeat."""
    board = StatusBoard()
    assert board.update(_beat("Weather", 0), now=0.0)  # a new row
    assert not board.update(_beat("Weather", 0), now=1.0)
    assert board.update(_beat("Weather", 0), now=9.0)  # it was LOST: alive again


def test_an_error_report_is_kept_capped() -> None:
    """A peer's 5 MB error report is not kept whole (issue 29 item 5)."""
    board = StatusBoard()
    board.update(event("errorCode", 1.0, errorCode=7, errorReport="x" * 5_000_000), 1.0, tai=1.0)
    assert len(board.cscs[A].last_error) <= 1100


def test_the_plain_table_says_what_the_bound_left_out() -> None:
    board = StatusBoard(max_cscs=2)
    for index in range(3):
        board.update(_beat("Camera", index), now=0.0)
    assert board.render(0.0).splitlines()[-1] == (
        "(board full at 2: 0 silent addresses forgotten, 1 events of new ones not shown)"
    )
