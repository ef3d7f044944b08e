"""The writer's durable spool: records the store could not take (down, or too slow for
the bus), kept on disk until it can.

Append-only segment files under one directory, each line one record as JSON; an append
is fsynced before it returns, so a caller may then tell the broker the messages are
safe. A segment holds at most ``segment_bytes`` (an append is split across segments;
only a single record larger than that has a segment of its own); replay reads the
oldest whole segment (what it holds in memory is bounded by that size), and the caller
removes it once the store has every record of it. A crash between the store's write and
the removal replays the segment again: the stores are idempotent on the record's key.
A line torn by a crash mid-append was never acknowledged (the broker sends it again):
it is skipped, and counted.

Blocking calls, safe from several threads: the CSC runs them in worker threads.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from cscs.camera.files import fsync_directory
from cscs.core.topics import Kind
from cscs.efd.records import EfdRecord, Measurement

__all__ = ["Segment", "Spool", "decode_record", "encode_record"]

_SUFFIX = ".spool"


def encode_record(record: EfdRecord) -> bytes:
    m = record.measurement
    row = [m.csc, m.kind.value, m.name, record.index, record.seq, record.sent_tai,
           record.received_tai, record.fields]  # fmt: skip
    return json.dumps(row, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode_record(line: bytes) -> EfdRecord:
    """A spooled record; ValueError (or TypeError) if the line is not one."""
    csc, kind, name, index, seq, sent, received, fields = json.loads(line)
    if not isinstance(fields, dict):
        raise ValueError("fields are not an object")
    return EfdRecord(Measurement(str(csc), Kind(kind), str(name)), int(index), int(seq),
                     float(sent), float(received), fields)  # fmt: skip


class Segment:
    """A spool file read back (whole, or the next chunk of one larger than the segment
    size: a file written before segments were capped): its records, the lines that were
    torn, and the file offset the chunk ends at."""

    def __init__(
        self, path: Path, records: list[EfdRecord], torn: int, size: int, end: int = -1
    ) -> None:
        self.path, self.records, self.torn, self.size = path, records, torn, size
        self.end = end  # offset after the chunk; -1: the whole file


class Spool:
    def __init__(self, directory: Path, segment_bytes: int = 4 * 2**20) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segments = sorted(directory.glob(f"*{_SUFFIX}"))  # oldest first
        self._sizes = {path: path.stat().st_size for path in self._segments}
        self._next = int(self._segments[-1].stem) + 1 if self._segments else 1
        self._current: Path | None = None  # the segment appended to; None: begin one
        # Offsets already replayed of a file larger than a segment, read in chunks. Not
        # persisted: after a restart the file is replayed from its start (idempotent).
        self._done: dict[Path, int] = {}

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values()) - sum(self._done.values())

    @property
    def empty(self) -> bool:
        with self._lock:
            return not self._segments

    def append(self, records: list[EfdRecord]) -> int:
        """Keep ``records`` (on disk, fsynced, when this returns); the bytes written.
        Split across segments of at most ``segment_bytes`` (a record larger than that
        alone in one), so a replay never reads more than a segment's size (or one
        record). OSError when the disk will not have them (full, read-only): what was
        fsynced before stays, and is written to the store again (idempotent)."""
        lines = [encode_record(r) for r in records]
        written = 0
        with self._lock:
            i = 0
            while i < len(lines):
                path = self._current
                full = path is not None and self._sizes[path] + len(lines[i]) > self.segment_bytes
                if path is None or (full and self._sizes[path] > 0):
                    path = self._begin()
                piece = [lines[i]]  # at least one line: a record larger than a segment
                size = len(lines[i])
                i += 1
                while (
                    i < len(lines)
                    and self._sizes[path] + size + len(lines[i]) <= self.segment_bytes
                ):
                    piece.append(lines[i])
                    size += len(lines[i])
                    i += 1
                _append_fsynced(path, b"".join(piece), self._sizes[path])
                self._sizes[path] += size
                written += size
        return written

    def oldest(self) -> Segment | None:
        """The oldest segment read whole, or its next chunk of about ``segment_bytes``
        when it is larger (the one being appended to is closed first: later appends go
        to a new one), or None when nothing is spooled."""
        with self._lock:
            if not self._segments:
                return None
            path = self._segments[0]
            if path == self._current:
                self._current = None
            start, size = self._done.get(path, 0), self._sizes[path]
            data = _read_chunk(path, start, self.segment_bytes)
        records: list[EfdRecord] = []
        torn = 0
        for line in data.splitlines():
            try:
                records.append(decode_record(line))
            except (ValueError, TypeError, KeyError):
                torn += 1
        end = start + len(data)
        return Segment(path, records, torn, len(data), end if end < size else -1)

    def remove(self, segment: Segment) -> None:
        """The store has every record of ``segment``: forget it (or, for a chunk of a
        file, remember where the next chunk begins)."""
        with self._lock:
            if segment.end >= 0:
                self._done[segment.path] = segment.end
                return
            segment.path.unlink(missing_ok=True)
            self._segments.remove(segment.path)
            del self._sizes[segment.path]
            self._done.pop(segment.path, None)
            fsync_directory(self.directory)

    def _begin(self) -> Path:
        path = self.directory / f"{self._next:016d}{_SUFFIX}"
        self._next += 1
        path.touch()
        fsync_directory(self.directory)  # the new file's name survives a crash too
        self._segments.append(path)
        self._sizes[path] = 0
        self._current = path
        return path


def _read_chunk(path: Path, start: int, limit: int) -> bytes:
    """About ``limit`` bytes of whole lines from ``start`` (one longer line whole; the
    file's torn tail, if any, with the last chunk)."""
    with open(path, "rb") as source:
        source.seek(start)
        data = source.read(limit)
        if len(data) < limit:
            return data  # to the end of the file
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            return data + source.readline()  # one record larger than a chunk
        return data[:cut]


def _append_fsynced(path: Path, data: bytes, size_before: int) -> None:
    with open(path, "ab") as out:
        try:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        except OSError:
            out.truncate(size_before)  # no torn line left behind, if it can
            raise
