"""What every EFD store does (the embedded SQLite file, InfluxDB 1.x): one interface,
so the writer, the readers and the tests do not care which one is behind it.

Calls are synchronous (SQLite and the InfluxDB client both are); callers on the event
loop run them in a worker thread. Every failure of the store itself (down, slow, full,
refused) is an :class:`EfdStoreError` naming the store and the cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cscs.efd.records import EfdRecord, Measurement

__all__ = ["EfdRefusedError", "EfdStore", "EfdStoreError"]


class EfdStoreError(Exception):
    """The store could not do what was asked (unreachable, refused, full)."""


class EfdRefusedError(EfdStoreError):
    """The store answered and refused these records for good (too large, a value it
    cannot keep): writing them again would fail again, unlike an outage. ``records``
    holds the batch refused; the writer bisects it to find the records to set aside."""

    def __init__(self, message: str, records: Sequence[EfdRecord] = ()) -> None:
        super().__init__(message)
        self.records = list(records)


class EfdStore(Protocol):
    """An EFD store. ``write`` is idempotent: a record whose ``key`` is already stored is
    not stored again (two writers, a batch written twice after a timeout)."""

    url: str  # where it is, without secrets: for logs and errors

    def write(self, records: Sequence[EfdRecord]) -> None:
        """Store ``records`` (all or none, as far as the store allows); EfdStoreError."""

    def measurements(self) -> list[Measurement]:
        """Every measurement that has at least one record, sorted."""

    def fields(self, measurement: Measurement) -> list[str]:
        """The field names recorded for ``measurement`` (the ``private_*`` ones too)."""

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
        """Records of ``measurements`` sent (``sent_tai``) from ``start`` to ``end``
        (TAI, inclusive), of ``index`` only if given, in order of ``sent_tai`` (newest
        first if asked), at most ``limit``."""

    def close(self) -> None: ...
