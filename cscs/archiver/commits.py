"""The archive's catalog rows committed in groups: every file finished while the last
transaction was under way goes into the next one (docs/decisions/0040).

A file is recorded before it is given its name, so each file waits for a commit; one
transaction per file would cost an LSSTCam image 189 of them (each a ``fsync`` of the
SQLite journal, or a round trip and a WAL flush on PostgreSQL). Here the first thread to
arrive commits for everyone queued behind it (no thread of its own, no timer): sensors
finished together share one transaction, and a sensor never waits for more than the
transaction under way and its own. A group the database refuses is recorded again one
caller at a time, so one bad row (a sensor's) never costs the others theirs.

Blocking: the archive store calls it from its worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cscs.catalog import ArchivedFile, CatalogError, Observation

__all__ = ["GroupCommit", "RecordAll"]

#: One transaction for all of these rows (:meth:`cscs.catalog.Catalog.record_all`).
RecordAll = Callable[[Sequence[ArchivedFile], Sequence[Observation]], None]


def _nothing() -> None:
    pass


@dataclass
class _Waiting:
    rows: Sequence[ArchivedFile]
    observations: Sequence[Observation]
    done: bool = False
    error: BaseException | None = field(default=None)


class GroupCommit:
    """Commits callers' rows, grouping those that arrive while a commit is under way."""

    def __init__(self, record_all: RecordAll, *, on_queued: Callable[[], None] = _nothing) -> None:
        self._record_all = record_all
        self._on_queued = on_queued  # a caller waits behind a commit under way (tests)
        self._changed = threading.Condition()
        self._queue: list[_Waiting] = []
        self._committing = False
        self.transactions = 0  # committed, for the benchmark and the tests
        self.rows = 0

    def record(self, rows: Sequence[ArchivedFile], observations: Sequence[Observation]) -> None:
        """Return once ``rows`` and ``observations`` are committed (with whatever else
        was waiting); CatalogError (or what the database raised) if they are not."""
        mine = _Waiting(rows, observations)
        with self._changed:
            self._queue.append(mine)
            if self._committing:
                self._on_queued()
            self._changed.wait_for(lambda: mine.done or not self._committing)
            if not mine.done:
                self._committing = True
                group, self._queue = self._queue, []
        if not mine.done:
            try:
                self._commit(group)
            finally:
                with self._changed:
                    self._committing = False
                    self._changed.notify_all()
        if mine.error is not None:
            raise mine.error

    def _commit(self, group: list[_Waiting]) -> None:
        try:
            self._commit_together(group)
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
            else:  # someone's row is refused: everyone else's still goes in
                for waiting in group:
                    try:
                        self._commit_together([waiting])
                    except Exception as alone:
                        waiting.error = alone
        finally:
            for waiting in group:
                if not waiting.done and waiting.error is None:
                    waiting.error = CatalogError("the catalog commit was interrupted")
                waiting.done = True

    def _commit_together(self, group: list[_Waiting]) -> None:
        rows = [row for waiting in group for row in waiting.rows]
        observations = [o for waiting in group for o in waiting.observations]
        self._record_all(rows, observations)
        self.transactions += 1
        self.rows += len(rows)
        for waiting in group:
            waiting.done = True
