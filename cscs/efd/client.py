"""Reading the EFD from Python, with the method names astronomers know from the
observatory's EFD client: ``get_topics``, ``get_fields``, ``select_time_series`` and
``select_top_n``, awaited as theirs are (the store runs in a worker thread, so a notebook's
or a CSC's event loop is never blocked by a query).

Results are astropy :class:`~astropy.table.Table`s, not pandas DataFrames: pandas is not
a dependency of this project (astropy is, for the headers and QC), and the observatory's
client pins an old numpy that this project's stack cannot share. A table has a ``time``
column (astropy ``Time``, scale TAI: the message's ``sent_tai``) and one column per field
asked for; a field a record does not have is masked. ``Table.to_pandas()`` gives a
DataFrame where pandas is installed.

Topics are named by their EFD measurement name (``lsst.sal.Telescope.mount``,
``lsst.sal.ATCamera.logevent_endReadout``); times are astropy ``Time`` or TAI seconds.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from astropy.table import MaskedColumn, Table
from astropy.time import Time, TimeDelta

from cscs.core.tai import current_tai
from cscs.efd.influx_points import TAG
from cscs.efd.open import open_store
from cscs.efd.records import EfdRecord, Measurement, parse_measurement
from cscs.efd.store import EfdStore

__all__ = ["EfdClient", "EfdQueryError", "tai_seconds"]

#: Columns every topic has besides its fields: the record's own envelope.
ENVELOPE_COLUMNS = ("private_sndStamp", "private_rcvStamp", "private_seqNum", TAG)


class EfdQueryError(ValueError):
    """What was asked does not exist: no such topic, no such field (the message says)."""


def tai_seconds(when: Time | float) -> float:
    """TAI Unix-epoch seconds (the ICD's ``*_tai``) of an astropy Time or a number."""
    if isinstance(when, Time):
        return float(when.tai.unix_tai)
    value = float(when)
    if not math.isfinite(value):
        raise EfdQueryError(f"not a time: {when!r}")
    return value


def _as_list(fields: str | Sequence[str]) -> list[str]:
    names = [fields] if isinstance(fields, str) else list(fields)
    if not names:
        raise EfdQueryError("no field asked for")
    return names


def _value(record: EfdRecord, name: str) -> object:
    if name == "private_sndStamp":
        return record.sent_tai
    if name == "private_rcvStamp":
        return record.received_tai
    if name == "private_seqNum":
        return record.seq
    if name == TAG:
        return record.index
    return record.fields.get(name)


def to_table(records: Sequence[EfdRecord], fields: Sequence[str]) -> Table:
    """The table of ``records``: ``time`` (TAI) and ``fields``, masked where absent."""
    table = Table()
    table["time"] = Time([r.sent_tai for r in records], format="unix_tai", scale="tai")
    for name in fields:
        values = [_value(r, name) for r in records]
        missing = [v is None for v in values]
        if any(missing):
            present = next((v for v in values if v is not None), 0.0)
            filled = [present if v is None else v for v in values]
            table[name] = MaskedColumn(filled, mask=missing)
        else:
            table[name] = values
    return table


class EfdClient:
    """The EFD at ``store_or_url`` (an :class:`EfdStore`, or a URL as ``CSCS_EFD``)."""

    def __init__(self, store_or_url: EfdStore | str) -> None:
        self.store = open_store(store_or_url) if isinstance(store_or_url, str) else store_or_url

    async def get_topics(self) -> list[str]:
        """Every topic with at least one record, by measurement name."""
        measurements = await asyncio.to_thread(self.store.measurements)
        return sorted(str(m) for m in measurements)

    async def get_fields(self, topic: str) -> list[str]:
        """The fields recorded for ``topic`` (with ``private_*`` and ``salIndex``)."""
        measurement = await self._known(topic)
        fields = await asyncio.to_thread(self.store.fields, measurement)
        return sorted({*fields, *ENVELOPE_COLUMNS})

    async def select_time_series(
        self,
        topic: str,
        fields: str | Sequence[str],
        start: Time | float,
        end: Time | TimeDelta | float,
        is_window: bool = False,
        index: int | None = None,
    ) -> Table:
        """``fields`` of ``topic`` sent from ``start`` to ``end`` (inclusive), of the
        CSC index ``index`` only if given, in time order. As the observatory's client:
        ``end`` may be a ``TimeDelta`` after ``start``, or with ``is_window`` a window
        of that length centred on ``start``."""
        names = _as_list(fields)
        begin = tai_seconds(start)
        if isinstance(end, TimeDelta):
            span = float(end.to_value("s"))
            begin, finish = (
                (begin - span / 2, begin + span / 2) if is_window else (begin, begin + span)
            )
        else:
            finish = tai_seconds(end)
        measurement = await self._known(topic, names)
        records = await asyncio.to_thread(
            self.store.records, [measurement], begin, finish, index=index
        )
        return to_table(records, names)

    async def select_top_n(
        self,
        topic: str,
        fields: str | Sequence[str],
        num: int,
        time_cut: Time | float | None = None,
        index: int | None = None,
    ) -> Table:
        """The newest ``num`` records of ``topic`` sent before ``time_cut`` (default now),
        newest first (as the observatory's client returns them)."""
        names = _as_list(fields)
        measurement = await self._known(topic, names)
        cut = current_tai() if time_cut is None else tai_seconds(time_cut)
        records = await asyncio.to_thread(
            self.store.records,
            [measurement],
            -math.inf,
            cut,
            index=index,
            limit=max(0, int(num)),
            newest_first=True,
        )
        return to_table(records, names)

    async def _known(self, topic: str, fields: Sequence[str] = ()) -> Measurement:
        """The measurement ``topic`` names, checked to exist (with ``fields``)."""
        measurement = parse_measurement(topic)
        if measurement is None:
            raise EfdQueryError(
                f"{topic[:200]!r} is not an EFD topic name (lsst.sal.CSC.topic, "
                "lsst.sal.CSC.logevent_event, lsst.sal.CSC.command_command, lsst.sal.CSC.ackcmd)"
            )
        known = await asyncio.to_thread(self.store.measurements)
        if measurement not in known:
            raise EfdQueryError(f"no topic {topic} in the EFD at {self.store.url}")
        if fields:
            recorded = {*await asyncio.to_thread(self.store.fields, measurement)}
            unknown = [f for f in fields if f not in recorded and f not in ENVELOPE_COLUMNS]
            if unknown:
                raise EfdQueryError(
                    f"{topic} has no field {', '.join(unknown)} "
                    f"(it has {', '.join(sorted(recorded))})"
                )
        return measurement

    def close(self) -> None:
        self.store.close()
