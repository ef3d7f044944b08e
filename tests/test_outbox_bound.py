"""The gateway's outbox costs the same full as empty (issue 29, item 11): at its bound of
100,000 a put cost 269 ms and ``status()`` 186 ms, a ``COUNT(*)`` and an unindexed
``ORDER BY`` over the whole queue each time. Measured here in SQLite's own work (virtual
machine steps, which do not depend on the machine's load), not in seconds: the figures
in seconds are ``benchmarks/outbox_at_bound.py``'s."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cscs.telemetry_gateway.outbox import Outbox

STEP = 100  # SQLite instructions per progress call


def _filled(path: Path, count: int, monkeypatch: pytest.MonkeyPatch) -> Measured:
    """An outbox of ``count`` queued metrics (a few of them undroppable), at its bound."""
    Outbox(path, max(count, 1)).close()
    rows = (("qc", int(n % 10 != 0), b'{"x": 1}', float(n)) for n in range(count))
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO outbox (topic, droppable, payload, queued_tai) VALUES (?, ?, ?, ?)",
            rows,
        )
    return Measured(path, count, monkeypatch)


class Measured:
    """An outbox whose SQLite work is counted (its connection's progress handler)."""

    def __init__(self, path: Path, capacity: int, monkeypatch: pytest.MonkeyPatch) -> None:
        made: list[sqlite3.Connection] = []
        connect = sqlite3.connect

        def connecting(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            made.append(connect(*args, **kwargs))
            return made[-1]

        with monkeypatch.context() as patch:
            patch.setattr(sqlite3, "connect", connecting)
            self.outbox = Outbox(path, capacity)
        (self._db,) = made

    def work(self, call: Callable[[Outbox], object]) -> int:
        """SQLite's work for ``call``, in hundreds of virtual machine instructions."""
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        self._db.set_progress_handler(count, STEP)
        try:
            call(self.outbox)
        finally:
            self._db.set_progress_handler(None, STEP)
        return steps


def _put(outbox: Outbox) -> None:
    outbox.put("qc", lambda seq: json.dumps({"seq": seq}).encode(), True, 1.0)


def test_a_put_and_the_status_cost_no_more_on_a_full_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _filled(tmp_path / "small.sqlite", 100, monkeypatch)
    large = _filled(tmp_path / "large.sqlite", 20_000, monkeypatch)
    for measured in (small, large):
        measured.work(_put)  # the first put of a connection prepares its statements
    assert large.work(_put) <= 2 * small.work(_put) + 5
    assert large.work(Outbox.status) <= 2 * small.work(Outbox.status) + 5
    queued, oldest, dropped = large.outbox.status()
    # One metric dropped per put; the oldest message, a stage, is not one of them.
    assert (queued, oldest, dropped) == (20_000, 0.0, 2)
    small.outbox.close()
    large.outbox.close()


def test_the_count_is_right_after_removes_drops_and_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, capacity=3)
    for _ in range(5):
        _put(outbox)
    assert outbox.status()[::2] == (3, 2)
    outbox.remove(outbox.peek(1)[0].id)
    outbox.remove(123_456)  # not queued (removed before a crash): counts nothing
    assert outbox.status()[0] == 2
    outbox.close()
    # A queue whose count is wrong (an older version kept none) is counted at open.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE counters SET value = 77 WHERE name = 'queued'")
    outbox = Outbox(path, capacity=3)
    assert outbox.status()[0] == 2
    assert len(outbox.peek()) == 2
    outbox.close()
