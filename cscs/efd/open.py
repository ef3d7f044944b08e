"""Opening the EFD a URL names (``Settings.efd``): the embedded SQLite file or InfluxDB."""

from __future__ import annotations

import re
from pathlib import Path

from cscs.efd.store import EfdStore, EfdStoreError

__all__ = ["open_store"]

_INFLUX = re.compile(
    r"influxdb://(?P<host>[^/:\s]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})/(?P<db>\w+)"
)


def open_store(url: str) -> EfdStore:
    """The store at ``url``: ``sqlite:////absolute/path`` (made if absent) or
    ``influxdb://HOST:PORT/DATABASE``; EfdStoreError naming what is wrong."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute():
            raise EfdStoreError(f"EFD {url!r}: the path must be absolute (sqlite:////path)")
        from cscs.efd.sqlite_store import SqliteStore

        return SqliteStore(path)
    match = _INFLUX.fullmatch(url)
    if match is not None:
        from cscs.efd.influx_store import InfluxStore

        return InfluxStore(match["host"].strip("[]"), int(match["port"]), match["db"])
    raise EfdStoreError(
        f"EFD {url[:200]!r}: not sqlite:////absolute/path or influxdb://HOST:PORT/DATABASE"
    )
