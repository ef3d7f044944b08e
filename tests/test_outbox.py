"""The Telemetry Gateway's durable queue: order kept, each topic's seq without gaps
across restarts, bounded with the oldest metrics dropped first."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cscs.telemetry_gateway import outbox as outbox_module
from cscs.telemetry_gateway.outbox import Outbox


def stamp(text: str) -> Callable[[int], bytes]:
    return lambda seq: json.dumps({"text": text, "seq": seq}).encode()


def put(
    outbox: Outbox, topic: str, make: Callable[[int], bytes], **options: Any
) -> tuple[int, int]:
    """A message queued (not a redelivery): its seq and how many were dropped for it."""
    queued = outbox.put(topic, make, **options)
    assert queued is not None
    return queued


def drained(outbox: Outbox) -> list[tuple[str, dict[str, object]]]:
    taken = []
    while batch := outbox.peek(3):
        for message in batch:
            taken.append((message.topic, json.loads(message.payload)))
            outbox.remove(message.id)
    return taken


def test_messages_come_out_in_order_with_each_topics_seq(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", capacity=100)
    for number in range(5):
        topic = "a" if number % 2 == 0 else "b"
        _, dropped = put(outbox, topic, stamp(f"m{number}"), droppable=True, queued_tai=number)
        assert dropped == 0
    assert outbox.status() == (5, 0.0, 0)
    assert drained(outbox) == [
        ("a", {"text": "m0", "seq": 1}), ("b", {"text": "m1", "seq": 1}),
        ("a", {"text": "m2", "seq": 2}), ("b", {"text": "m3", "seq": 2}),
        ("a", {"text": "m4", "seq": 3}),
    ]  # fmt: skip
    assert outbox.status() == (0, 0.0, 0)
    outbox.close()


def _queue_and_die(path: str) -> None:
    outbox = Outbox(Path(path), capacity=100)
    for number in range(3):
        put(outbox, "a", stamp(f"m{number}"), droppable=True, queued_tai=10.0 + number)
    outbox.remove(outbox.peek(1)[0].id)  # the broker had the first
    os._exit(0)  # no close, no clean-up: the process ends as a killed one would


@pytest.mark.broker  # a process killed and started again
def test_a_restart_loses_nothing_and_the_seq_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    process = multiprocessing.get_context("spawn").Process(target=_queue_and_die, args=(str(path),))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    outbox = Outbox(path, capacity=100)
    assert outbox.status()[:2] == (2, 11.0)
    put(outbox, "a", stamp("after"), droppable=True, queued_tai=20.0)
    assert [m["seq"] for _, m in drained(outbox)] == [2, 3, 4]


def test_when_full_the_oldest_metrics_go_first_and_are_counted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", capacity=3)
    put(outbox, "alarm", stamp("alarm 1"), droppable=False, queued_tai=1.0)
    put(outbox, "qc", stamp("qc 1"), droppable=True, queued_tai=2.0)
    put(outbox, "qc", stamp("qc 2"), droppable=True, queued_tai=3.0)
    assert put(outbox, "qc", stamp("qc 3"), droppable=True, queued_tai=4.0)[1] == 1
    assert put(outbox, "alarm", stamp("alarm 2"), droppable=False, queued_tai=5.0)[1] == 1
    assert outbox.status() == (3, 1.0, 2)
    assert [m["text"] for _, m in drained(outbox)] == ["alarm 1", "qc 3", "alarm 2"]
    # Nothing droppable left: then the oldest of all.
    for number in range(4):
        put(outbox, "alarm", stamp(f"a{number}"), droppable=False, queued_tai=6.0 + number)
    assert [m["text"] for _, m in drained(outbox)] == ["a1", "a2", "a3"]
    assert outbox.status()[2] == 3


def test_a_failed_put_changes_nothing(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", capacity=10)
    put(outbox, "a", stamp("one"), droppable=True, queued_tai=1.0)

    def broken(seq: int) -> bytes:
        raise ValueError("cannot encode")

    with pytest.raises(ValueError, match="cannot encode"):
        put(outbox, "a", broken, droppable=True, queued_tai=2.0)
    put(outbox, "a", stamp("two"), droppable=True, queued_tai=3.0)
    assert [m["seq"] for _, m in drained(outbox)] == [1, 2]  # no gap for the failure


def test_a_dm_message_taken_before_is_recognised_even_after_a_crash(tmp_path: Path) -> None:
    """The DM broker sends again what it did not hear acknowledged (the gateway died just
    after queueing it): the key, kept with the message it produced, says so."""
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, capacity=100)
    assert outbox.put("a", stamp("one"), droppable=True, queued_tai=1.0, received=b"k1")
    outbox.close()
    outbox = Outbox(path, capacity=100)  # restarted
    assert (
        outbox.put("a", stamp("one again"), droppable=True, queued_tai=2.0, received=b"k1") is None
    )
    assert outbox.put("b", stamp("two"), droppable=True, queued_tai=3.0, received=b"k2")
    assert [m["text"] for _, m in drained(outbox)] == ["one", "two"]


def test_the_keys_remembered_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "REMEMBERED", 2)
    outbox = Outbox(tmp_path / "outbox.sqlite", capacity=100)
    for key in (b"1", b"2", b"3"):
        assert outbox.put("a", stamp(key.decode()), droppable=True, queued_tai=1.0, received=key)
    assert outbox.put("a", stamp("3"), droppable=True, queued_tai=1.0, received=b"3") is None
    assert outbox.put("a", stamp("1"), droppable=True, queued_tai=1.0, received=b"1")  # forgotten


def test_a_message_that_could_not_be_queued_is_not_remembered_as_taken(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", capacity=10)

    def broken(seq: int) -> bytes:
        raise ValueError("cannot encode")

    with pytest.raises(ValueError, match="cannot encode"):
        outbox.put("a", broken, droppable=True, queued_tai=1.0, received=b"k")
    assert outbox.put("a", stamp("again"), droppable=True, queued_tai=2.0, received=b"k")
