"""An EFD store in memory: for fast unit tests of what reads or writes the EFD, never a
replacement for the real stores' tests (``tests/test_efd_stores.py`` runs both)."""

from __future__ import annotations

from collections.abc import Sequence

from cscs.efd.records import EfdRecord, Measurement

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self) -> None:
        self.url = "memory://"
        self._records: dict[tuple[str, int, int, float], EfdRecord] = {}
        self.fail: Exception | None = None  # raised by the next calls while set (a fault)

    def write(self, records: Sequence[EfdRecord]) -> None:
        if self.fail is not None:
            raise self.fail
        for record in records:
            self._records.setdefault(record.key, record)

    def measurements(self) -> list[Measurement]:
        return sorted({r.measurement for r in self._records.values()})

    def fields(self, measurement: Measurement) -> list[str]:
        names = {"private_sndStamp", "private_rcvStamp", "private_seqNum"}
        for record in self._records.values():
            if record.measurement == measurement:
                names.update(record.fields)
        return sorted(names)

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
        if self.fail is not None:
            raise self.fail
        wanted = set(measurements)
        found = [
            r
            for r in self._records.values()
            if r.measurement in wanted
            and start <= r.sent_tai <= end
            and (index is None or r.index == index)
        ]
        found.sort(key=lambda r: (r.sent_tai, r.seq), reverse=newest_first)
        return found[:limit] if limit is not None else found

    def close(self) -> None:
        pass
