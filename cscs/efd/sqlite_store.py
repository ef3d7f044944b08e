"""The embedded EFD store: one SQLite file, nothing to install (ADR 0032).

One writer process (the EFD writer) and any number of reader processes (the header
service rebuilding a header, ``cscs efd``) use the file at once: WAL journal, so readers
never block the writer nor the writer them; a write is one ``BEGIN IMMEDIATE``
transaction, all of a batch or nothing; a busy file is waited on (``busy_timeout``) and
then reported, never hung on.

Layout: ``topic`` (one row per measurement), ``field`` (the field names seen per
measurement, so ``fields()`` reads a few rows instead of every record) and ``record``
(the key, the times, the fields as JSON, which keeps bool/int/float/str/None apart).
The unique index on ``(topic, sent_tai, salIndex, seq)`` is both the deduplication
(``INSERT OR IGNORE``: two writers, a batch written again) and the range index for
"this topic from then to then".

Written with :mod:`sqlite3` directly rather than SQLAlchemy Core: measured, both insert
a batch of 1000 records in the same time (encoding the fields as JSON is most of it), so
Core would add a layer and buy nothing here (one dialect, a handful of statements), while
sqlite3 gives direct hold of what this store is about: ``BEGIN IMMEDIATE``, the busy
timeout, and SQLite's own error for each failure (ADR 0032).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from cscs.core.topics import Kind
from cscs.efd.records import EfdRecord, Measurement
from cscs.efd.store import EfdStoreError

__all__ = ["SqliteStore"]

_T = TypeVar("_T")
_VERSION = 1  # PRAGMA user_version of this layout
_BUSY_TIMEOUT = 5.0  # s a call waits for another process's write before it is an error
_PRIVATE = ("private_rcvStamp", "private_seqNum", "private_sndStamp")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topic (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    csc TEXT NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS field (
    topic_id INTEGER NOT NULL REFERENCES topic (id),
    name TEXT NOT NULL,
    PRIMARY KEY (topic_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS record (
    topic_id INTEGER NOT NULL REFERENCES topic (id),
    sent_tai REAL NOT NULL,
    sal_index INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    received_tai REAL NOT NULL,
    fields TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS record_key ON record (topic_id, sent_tai, sal_index, seq);
"""


def _cause(error: sqlite3.Error, busy_timeout: float) -> str:
    """What went wrong, in the words night staff act on."""
    text = str(error)
    lowered = text.lower()
    if "disk is full" in lowered or "disk i/o" in lowered:
        return f"disk full or failing ({text})"
    if "locked" in lowered or "busy" in lowered:
        return f"locked by another process for over {busy_timeout:g} s ({text})"
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return f"corrupt ({text})"
    if "readonly" in lowered or "unable to open" in lowered:
        return f"cannot be opened for writing ({text})"
    return text


class SqliteStore:
    """The EFD in the SQLite file ``path`` (made, with its directory, if absent)."""

    def __init__(self, path: Path, *, busy_timeout: float = _BUSY_TIMEOUT) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self.url = f"sqlite:///{path}"
        self._lock = threading.Lock()  # one connection, used from worker threads
        self._topic_ids: dict[str, int] = {}
        self._known_fields: set[tuple[int, str]] = set()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise EfdStoreError(f"EFD {path}: cannot make its directory ({error})") from error
        self._db = self._guard("open", self._open)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + FULL: every COMMIT is fsynced, so a batch whose write returned survives
            # a power cut. The writer acknowledges QoS 1 messages and removes spool
            # segments on that return; NORMAL would let a power cut lose both copies.
            # One fsync per batch of up to 1000 records (figures in docs/efd.md).
            db.execute("PRAGMA synchronous=FULL")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version not in (0, _VERSION):
                raise EfdStoreError(
                    f"EFD {self.path}: layout version {version}, this release reads {_VERSION}"
                )
            if version == 0:
                # One transaction: two processes opening a new file at once both succeed.
                db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={_VERSION};COMMIT;")
        except BaseException:
            db.close()
            raise
        return db

    def _guard(self, what: str, call: Callable[[], _T]) -> _T:
        """``call()`` under the lock, with every SQLite failure an EfdStoreError."""
        try:
            with self._lock:
                return call()
        except sqlite3.Error as error:
            cause = _cause(error, self._busy_timeout)
            raise EfdStoreError(f"EFD {self.path}: {what}: {cause}") from error
        except ValueError as error:  # a record's fields that are not JSON any more
            raise EfdStoreError(f"EFD {self.path}: {what}: corrupt ({error})") from error

    # -- writing ---------------------------------------------------------------

    def write(self, records: Sequence[EfdRecord]) -> None:
        if records:
            self._guard("write", lambda: self._write(records))

    def _write(self, records: Sequence[EfdRecord]) -> None:
        db = self._db
        new_ids: dict[str, int] = {}
        new_fields: set[tuple[int, str]] = set()
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = []
            for record in records:
                name = str(record.measurement)
                topic_id = self._topic_ids.get(name) or new_ids.get(name)
                if topic_id is None:
                    topic_id = new_ids[name] = self._topic_id(record.measurement)
                for field_name in record.fields:
                    if (topic_id, field_name) not in self._known_fields:
                        new_fields.add((topic_id, field_name))
                rows.append(
                    (
                        topic_id,
                        float(record.sent_tai),
                        record.index,
                        record.seq,
                        float(record.received_tai),
                        json.dumps(record.fields, separators=(",", ":")),
                    )
                )
            db.executemany(
                "INSERT OR IGNORE INTO record "
                "(topic_id, sent_tai, sal_index, seq, received_tai, fields) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            if new_fields:
                db.executemany(
                    "INSERT OR IGNORE INTO field (topic_id, name) VALUES (?, ?)", new_fields
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        # Only what is committed is remembered (a rolled-back topic id may be reused).
        self._topic_ids.update(new_ids)
        self._known_fields |= new_fields

    def _topic_id(self, measurement: Measurement) -> int:
        name = str(measurement)
        self._db.execute(
            "INSERT OR IGNORE INTO topic (name, csc, kind, topic) VALUES (?, ?, ?, ?)",
            (name, measurement.csc, str(measurement.kind), measurement.name),
        )
        row = self._db.execute("SELECT id FROM topic WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    # -- reading ---------------------------------------------------------------

    def measurements(self) -> list[Measurement]:
        def read() -> list[Measurement]:
            rows = self._db.execute("SELECT csc, kind, topic FROM topic").fetchall()
            return sorted(Measurement(csc, Kind(kind), name) for csc, kind, name in rows)

        return self._guard("list the measurements", read)

    def fields(self, measurement: Measurement) -> list[str]:
        def read() -> list[str]:
            rows = self._db.execute(
                "SELECT f.name FROM field f JOIN topic t ON t.id = f.topic_id WHERE t.name = ?",
                (str(measurement),),
            ).fetchall()
            return sorted({row[0] for row in rows} | set(_PRIVATE))

        return self._guard(f"list the fields of {measurement}", read)

    def records(
        self,
        measurements: Sequence[Measurement],
        start: float,
        end: float,
        *,
        index: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[EfdRecord]:
        by_name = {str(m): m for m in measurements}
        if not by_name or (limit is not None and limit <= 0):
            return []
        marks = ",".join("?" * len(by_name))
        sql = (
            "SELECT t.name, r.sal_index, r.seq, r.sent_tai, r.received_tai, r.fields "
            "FROM record r JOIN topic t ON t.id = r.topic_id "
            f"WHERE t.name IN ({marks}) AND r.sent_tai >= ? AND r.sent_tai <= ?"
        )
        params: list[object] = [*by_name, float(start), float(end)]
        if index is not None:
            sql += " AND r.sal_index = ?"
            params.append(index)
        order = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY r.sent_tai {order}, r.seq {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))

        def read() -> list[EfdRecord]:
            return [
                EfdRecord(by_name[name], index_, seq, sent, received, json.loads(fields))
                for name, index_, seq, sent, received, fields in self._db.execute(sql, params)
            ]

        return self._guard("read", read)

    def close(self) -> None:
        with self._lock:
            self._db.close()
