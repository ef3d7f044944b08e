"""Records the store refused for good, set aside so they do not hold the spool.

A store that answers "never" to a record (InfluxDB's 413 for a body too large, a 400
partial write, ``max-values-per-tag``) would otherwise be retried for ever, with
everything heard afterwards waiting behind it. The writer bisects the refused batch down
to the records refused and appends those here, one JSON line each (the spool's
encoding, so an operator can replay them once the cause is fixed). The file is bounded:
past ``max_bytes`` the records are only counted (and logged by the writer).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cscs.efd.records import EfdRecord
from cscs.efd_writer.spool import encode_record

__all__ = ["DeadLetters"]

FILE_NAME = "refused.jsonl"


class DeadLetters:
    def __init__(self, directory: Path, max_bytes: int = 64 * 2**20) -> None:
        self.path = directory / FILE_NAME
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def keep(self, records: list[EfdRecord]) -> int:
        """Append what fits under the bound (fsynced); the number of records kept.
        OSError when the disk will not have them."""
        data = b"".join(encode_record(r) for r in records)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size + len(data) > self.max_bytes:
                return 0
            with open(self.path, "ab") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        return len(records)
