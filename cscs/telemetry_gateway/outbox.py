"""The gateway's durable queue towards the OCS side (SQLite): what must be published is
written here first, stamped with its final per-topic ``seq``, and taken out only once
the broker has it. So an outage of the OCS side, or a restart of the gateway, loses
nothing and reorders nothing, and a message published again after a crash (between
the broker's acknowledgement and its removal here) carries the same ``seq``: a
consumer recognises it. On the DM side, each message taken is remembered by its key
in the same transaction as what it produced, so one the DM broker sends again after a
crash is recognised and not queued twice.

Bounded by ``capacity`` messages: when full, the oldest *metrics* go first (an image's
quality is worth least once the night has moved on); stages and alarm changes only when
nothing else is left to drop. What is queued is counted as it changes (in the
``counters`` table, in the transaction that changes it, and counted afresh at open), and
the oldest metrics are found through an index: a put or a :meth:`Outbox.status` costs
the same on a full queue as on an empty one, not a scan of it. Blocking calls: the CSC
runs them in a thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REMEMBERED", "Outbox", "Queued"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    droppable INTEGER NOT NULL,
    payload BLOB NOT NULL,
    queued_tai REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sequences (topic TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS received (n INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS outbox_droppable ON outbox (droppable, id);
"""

_OLDEST_DROPPABLE = "SELECT id FROM outbox WHERE droppable = 1 ORDER BY id LIMIT ?"
_OLDEST = "SELECT id FROM outbox ORDER BY id LIMIT ?"

#: DM messages remembered (by key) to recognise a redelivery: more than the broker can
#: hold back for the gateway, few enough to cost nothing.
REMEMBERED = 10_000


@dataclass(frozen=True)
class Queued:
    id: int
    topic: str
    payload: bytes  # the wire bytes, seq and sent_tai included
    queued_tai: float


class Outbox:
    def __init__(self, path: Path, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"an outbox holds at least one message, not {capacity}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.capacity = path, capacity
        self._lock = threading.Lock()  # one connection, used from worker threads
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # queued means on disk
        self._db.executescript(_SCHEMA)
        with self._transaction():  # whatever an older version or a crash left counted
            (queued,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            self._set("queued", int(queued))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(
        self,
        topic: str,
        stamp: Callable[[int], bytes],
        droppable: bool,
        queued_tai: float,
        received: bytes | None = None,
    ) -> tuple[int, int] | None:
        """Queue the message ``stamp(seq)`` makes with the topic's next ``seq``; its seq
        and how many old messages were dropped to make room.

        ``received`` is the key of the DM message it comes from: remembered in the same
        transaction, so a redelivery (after a crash between this and the broker hearing
        that the gateway has it) is recognised, and None returned."""
        with self._lock, self._transaction():
            if received is not None:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO received (key) VALUES (?)", (received,)
                )
                if cursor.rowcount == 0:
                    return None
                self._db.execute(
                    "DELETE FROM received WHERE n <= ?", ((cursor.lastrowid or 0) - REMEMBERED,)
                )
            row = self._db.execute("SELECT seq FROM sequences WHERE topic = ?", (topic,))
            seq = (row.fetchone() or (0,))[0] + 1
            self._db.execute(
                "INSERT INTO sequences (topic, seq) VALUES (?, ?) "
                "ON CONFLICT(topic) DO UPDATE SET seq = excluded.seq",
                (topic, seq),
            )
            self._db.execute(
                "INSERT INTO outbox (topic, droppable, payload, queued_tai) VALUES (?, ?, ?, ?)",
                (topic, int(droppable), stamp(seq), queued_tai),
            )
            self._add("queued", 1)
            dropped = self._make_room()
        return seq, dropped

    def peek(self, limit: int = 100) -> list[Queued]:
        """The oldest ``limit`` messages, in the order they were queued."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, queued_tai FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [Queued(int(i), str(t), bytes(p), float(q)) for i, t, p, q in rows]

    def remove(self, message_id: int) -> None:
        """The broker has it: forget it."""
        with self._lock, self._transaction():
            cursor = self._db.execute("DELETE FROM outbox WHERE id = ?", (message_id,))
            self._add("queued", -cursor.rowcount)

    def status(self) -> tuple[int, float, int]:
        """How many wait, since when (TAI at which the oldest was queued, 0 for none),
        and how many were dropped for room since the outbox was made."""
        with self._lock:
            oldest = self._db.execute("SELECT queued_tai FROM outbox ORDER BY id LIMIT 1")
            since = (oldest.fetchone() or (0.0,))[0]
            return self._get("queued"), float(since), self._get("dropped")

    def _make_room(self) -> int:
        excess = self._get("queued") - self.capacity
        if excess <= 0:
            return 0
        # The oldest droppable first, then (only if that is not enough) the oldest of all;
        # each found through an index, not by sorting the queue.
        left = excess
        for oldest in (_OLDEST_DROPPABLE, _OLDEST):
            left -= self._db.execute(f"DELETE FROM outbox WHERE id IN ({oldest})", (left,)).rowcount
            if left <= 0:
                break
        dropped = excess - max(left, 0)
        self._add("queued", -dropped)
        self._add("dropped", dropped)
        return dropped

    def _get(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _set(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def _add(self, name: str, change: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, change),
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT (or ROLLBACK): a put is all or nothing."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
