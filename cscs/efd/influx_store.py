"""The EFD in InfluxDB 1.x, laid out as the observatory's EFD is (ADR 0032).

Measurements ``lsst.sal.{CSC}.…`` (:mod:`cscs.efd.records`), tag ``salIndex``, the
fields as published plus ``private_sndStamp``, ``private_rcvStamp`` and
``private_seqNum``; the point's time is the UTC time of ``sent_tai``
(:mod:`cscs.efd.influx_points`), so an astronomer's InfluxQL with UTC times, written for
the observatory's EFD, runs unchanged here.

Written with the ``influxdb`` client (5.3), in batches, nanosecond precision. Every call
has a timeout (a slow or frozen server raises instead of hanging the writer), and every
failure of the server (refused, unreachable, 5xx, a write it rejects) is an
:class:`EfdStoreError` naming the server and the cause. Queries go through the client's
bind parameters; the only text put into a query is a measurement or field name, quoted
by :func:`~cscs.efd.influx_points.quote_ident`.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

from cscs.efd.influx_points import (
    TAG,
    coerce,
    keepable_name,
    parse_type_conflict,
    quote_ident,
    record_of,
    to_line,
    to_point,
    utc_bound_ns,
)
from cscs.efd.records import EfdRecord, Measurement, parse_measurement
from cscs.efd.store import EfdRefusedError, EfdStoreError

__all__ = ["InfluxStore"]

_T = TypeVar("_T")
_BATCH = 5000  # points per HTTP request (InfluxDB's documented sweet spot)
_MAX_CONFLICT_ROUNDS = 32  # type conflicts settled per write before it is refused
_MAX_BODY = 4 * 2**20  # bytes per HTTP request: far below influxd's max-body-size (25 MB)
# 4xx answers that are about the server or the client, not the records: an outage to wait
# out (a database not made yet, a timeout, too many requests, credentials not accepted).
_NOT_THE_RECORDS = frozenset({401, 403, 404, 408, 429})


def _for_good(error: InfluxDBClientError) -> bool:
    """The server refused the records themselves (413 too large, 400 partial write,
    max-values-per-tag): writing them again would be refused again."""
    code = getattr(error, "code", None)
    return (
        isinstance(code, int)
        and 400 <= code < 500
        and code not in _NOT_THE_RECORDS
        and "database not found" not in str(error)
    )


class InfluxStore:
    """The EFD in the InfluxDB 1.x database ``database`` at ``host:port``.

    Nothing is done on the network until the first call: a writer starting while
    InfluxDB is down spools instead of failing to start. The database is created (if
    absent) by the first write."""

    def __init__(self, host: str, port: int, database: str, *, timeout: float = 10.0) -> None:
        self.url = f"influxdb://{host}:{port}/{database}"
        self.database = database
        # retries=1: one attempt (0 would mean "forever"); the writer has its own back-off.
        self._client = InfluxDBClient(
            host=host, port=port, database=database, timeout=timeout, retries=1
        )
        self._lock = threading.Lock()  # one requests session, used from worker threads
        self._created = False

    def _call(self, what: str, call: Callable[[], _T]) -> _T:
        """``call()`` with every failure of the server as an EfdStoreError."""
        try:
            with self._lock:
                return call()
        except requests.exceptions.Timeout as error:
            raise EfdStoreError(f"EFD {self.url}: {what}: no answer in time ({error})") from error
        except requests.exceptions.RequestException as error:
            raise EfdStoreError(f"EFD {self.url}: {what}: unreachable ({error})") from error
        except InfluxDBServerError as error:
            raise EfdStoreError(f"EFD {self.url}: {what}: server error {error}") from error
        except InfluxDBClientError as error:
            text = f"EFD {self.url}: {what}: refused: {error}"
            if _for_good(error):
                raise EfdRefusedError(text) from error
            raise EfdStoreError(text) from error
        except ValueError as error:
            raise EfdRefusedError(f"EFD {self.url}: {what}: refused: {error}") from error

    # -- writing ---------------------------------------------------------------

    def write(self, records: Sequence[EfdRecord]) -> None:
        points = [to_point(r) for r in records if keepable_name(str(r.measurement))]
        if len(points) != len(records):
            bad = {str(r.measurement) for r in records if not keepable_name(str(r.measurement))}
            raise EfdRefusedError(
                f"EFD {self.url}: measurement names InfluxDB cannot keep: {sorted(bad)[:5]!r}",
                records,
            )
        if not points:
            return
        if not self._created:
            self._call("create the database", lambda: self._client.create_database(self.database))
            self._created = True
        for _ in range(_MAX_CONFLICT_ROUNDS):
            try:
                self._call("write", lambda: self._write_points(points))
                return
            except EfdStoreError as error:
                conflict = parse_type_conflict(str(error))
                if conflict is None:
                    if "database not found" in str(error):
                        self._created = False  # dropped, or a server on fresh data: again
                    if isinstance(error, EfdRefusedError):
                        raise EfdRefusedError(str(error), records) from error
                    raise
                # A field's type is fixed by its first value: convert or set aside the
                # values of another type, and write the batch again (points land on
                # themselves, so what was already written is not doubled).
                coerce(points, *conflict)
        raise EfdRefusedError(
            f"EFD {self.url}: write: more than {_MAX_CONFLICT_ROUNDS} conflicts", records
        )

    def _write_points(self, points: list[dict[str, Any]]) -> None:
        """The points in POSTs of at most ``_BATCH`` points and ``_MAX_BODY`` bytes, so
        no batch of large records meets the server's ``max-body-size`` (413)."""
        chunk: list[str] = []
        size = 0
        for point in points:
            line = to_line(point)
            length = len(line.encode()) + 1
            if chunk and (len(chunk) >= _BATCH or size + length > _MAX_BODY):
                self._post(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += length
        if chunk:
            self._post(chunk)

    def _post(self, lines: list[str]) -> None:
        self._client.write_points(lines, time_precision="n", protocol="line")

    # -- reading ---------------------------------------------------------------

    def _query(self, what: str, query: str, params: dict[str, Any] | None = None) -> Any:
        """The result of ``query`` (a database not made yet has nothing in it)."""

        def run() -> Any:
            return self._client.query(query, bind_params=params, epoch="ns")

        try:
            return self._call(what, run)
        except EfdStoreError as error:
            if "database not found" in str(error):
                return None
            raise

    def measurements(self) -> list[Measurement]:
        result = self._query("list the measurements", "SHOW MEASUREMENTS")
        if result is None:
            return []
        names = (row["name"] for row in result.get_points())
        return sorted(m for m in map(parse_measurement, names) if m is not None)

    def fields(self, measurement: Measurement) -> list[str]:
        query = f"SHOW FIELD KEYS FROM {quote_ident(str(measurement))}"
        result = self._query(f"list the fields of {measurement}", query)
        if result is None:
            return []
        # salIndex, a field here as in the observatory's EFD, is the record's index.
        return sorted(row["fieldKey"] for row in result.get_points() if row["fieldKey"] != TAG)

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
        if math.isnan(start) or math.isnan(end):
            return []
        # Bounds beyond any time (infinite) as the largest finite ones JSON can carry.
        start, end = max(start, -sys.float_info.max), min(end, sys.float_info.max)
        found: list[EfdRecord] = []
        for measurement in dict.fromkeys(measurements):
            found += self._records_of(measurement, start, end, index, limit, newest_first)
        found.sort(key=lambda r: (r.sent_tai, r.seq), reverse=newest_first)
        return found[:limit] if limit is not None else found

    def _records_of(
        self,
        measurement: Measurement,
        start: float,
        end: float,
        index: int | None,
        limit: int | None,
        newest_first: bool,
    ) -> list[EfdRecord]:
        # The time condition finds the shards and the range fast; the exact cut is on
        # private_sndStamp (the TAI the caller asked in).
        where = (
            "time >= $t0 AND time <= $t1 "
            'AND "private_sndStamp" >= $start AND "private_sndStamp" <= $end'
        )
        params: dict[str, Any] = {
            "t0": utc_bound_ns(start, upper=False),
            "t1": utc_bound_ns(end, upper=True),
            "start": float(start),
            "end": float(end),
        }
        if index is not None:
            where += ' AND "salIndex"::tag = $index'  # the tag: its index finds the series
            params["index"] = str(index)
        query = f"SELECT * FROM {quote_ident(str(measurement))} WHERE {where} ORDER BY time"
        if newest_first:
            query += " DESC"
        if limit is not None:
            if limit <= 0:
                return []  # InfluxQL's LIMIT 0 would mean no limit
            query += f" LIMIT {int(limit)}"  # an int: nothing to escape
        result = self._query(f"read {measurement}", query, params)
        if result is None:
            return []
        rows = (record_of(measurement, row) for row in result.get_points())
        return [r for r in rows if r is not None]

    def close(self) -> None:
        self._client.close()
