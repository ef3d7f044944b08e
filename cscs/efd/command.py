"""``cscs efd topics | fields TOPIC | series TOPIC FIELD[,FIELD…]``: the EFD read from a
terminal, through :class:`~cscs.efd.client.EfdClient` (the same reading as a notebook's),
printed as ``rich`` tables; :func:`add_efd_command` adds it to the ``cscs`` parser.

Times on the command line are ISO dates in TAI (``2026-12-07T03:00:00``) or TAI Unix
seconds; the default range is the last hour.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import TextIO

from astropy.table import MaskedColumn, Table
from astropy.time import Time
from rich.console import Console
from rich.table import Table as RichTable

from cscs.core.settings import Settings
from cscs.core.tai import current_tai
from cscs.efd.client import EfdClient, EfdQueryError

__all__ = [
    "add_efd_command",
    "parse_tai",
    "print_series",
    "show_fields",
    "show_series",
    "show_topics",
]

DEFAULT_SPAN = 3600.0  # s: `series` without --start shows the last hour
MAX_ROWS = 100_000  # rows printed at most (the rest counted): a terminal is no export

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def parse_tai(text: str) -> float:
    """TAI Unix seconds of ``text``: a number of TAI seconds, or an ISO time in TAI."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    try:
        value = float(Time(text, format="isot", scale="tai").unix_tai)
    except ValueError:
        try:
            value = float(Time(text, scale="tai").unix_tai)
        except ValueError as error:
            raise EfdQueryError(
                f"{text[:100]!r} is not a time (ISO in TAI, 2026-12-07T03:00:00, or TAI seconds)"
            ) from error
    if not math.isfinite(value):
        raise EfdQueryError(f"{text[:100]!r} is not a time")
    return value


def _print(out: TextIO, title: str, table: RichTable, note: str = "") -> None:
    """The title on a line of its own (a table's own title wraps at the table's width)."""
    console = Console(file=out, width=None if out.isatty() else 200, highlight=False)
    console.print(title, markup=False)
    console.print(table)
    if note:
        console.print(note, markup=False)


async def show_topics(client: EfdClient, out: TextIO) -> int:
    topics = await client.get_topics()
    table = RichTable("topic")
    for topic in topics:
        table.add_row(topic)
    _print(out, f"EFD {client.store.url}: {len(topics)} topics", table)
    return 0


async def show_fields(client: EfdClient, topic: str, out: TextIO) -> int:
    fields = await client.get_fields(topic)
    table = RichTable("field")
    for name in fields:
        table.add_row(name)
    _print(out, f"{topic}: {len(fields)} fields", table)
    return 0


def _cell(table: Table, name: str, row: int) -> str:
    """One value as text: a Python scalar's own text, blank where masked (absent)."""
    column = table[name]
    if isinstance(column, MaskedColumn) and column.mask[row]:
        return ""
    value = column[row]
    value = value.item() if hasattr(value, "item") else value
    return repr(value) if isinstance(value, float) else str(value)


def print_series(table: Table, title: str, out: TextIO) -> None:
    """``table`` (of :meth:`EfdClient.select_time_series`) as a rich table: the time in
    ISO TAI, the fields as recorded (a masked value left blank)."""
    names = [n for n in table.colnames if n != "time"]
    shown = RichTable("time (TAI)", *names)
    rows = min(len(table), MAX_ROWS)
    times = table["time"][:rows].isot if rows else []
    for row in range(rows):
        shown.add_row(str(times[row]), *(_cell(table, name, row) for name in names))
    more = len(table) - rows
    _print(out, title, shown, f"… and {more} rows more (narrow --start/--end)" if more else "")


async def show_series(
    client: EfdClient,
    topic: str,
    fields: list[str],
    out: TextIO,
    *,
    start: float | None = None,
    end: float | None = None,
    index: int | None = None,
) -> int:
    end = current_tai() if end is None else end
    start = end - DEFAULT_SPAN if start is None else start
    table = await client.select_time_series(topic, fields, start, end, index=index)
    begin, finish = (Time(t, format="unix_tai", scale="tai").isot for t in (start, end))
    where = "" if index is None else f" index {index}"
    print_series(table, f"{topic}{where} {begin} to {finish} TAI: {len(table)} records", out)
    return 0


def _tai_argument(text: str) -> float:
    try:
        return parse_tai(text)
    except ValueError as error:  # argparse shows this message, not a bare "invalid value"
        raise argparse.ArgumentTypeError(str(error)) from error


def add_efd_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cscs efd`` and its subcommands, on the ``cscs`` parser's subparsers."""
    efd = sub.add_parser("efd", help="read the EFD: topics, fields, a time series")
    efd.add_argument(
        "--efd", metavar="URL",
        help="the EFD (sqlite:////path or influxdb://HOST:PORT/DATABASE; default $CSCS_EFD, "
        "or the embedded store under the state directory)",
    )  # fmt: skip
    efd_sub = efd.add_subparsers(dest="efd_command", required=True)
    efd_sub.add_parser("topics", help="every topic recorded (EFD measurement names)")
    fields = efd_sub.add_parser("fields", help="the fields recorded for a topic")
    fields.add_argument("topic", help="e.g. lsst.sal.Telescope.mount")
    series = efd_sub.add_parser("series", help="fields of a topic over a time range")
    series.add_argument("topic", help="e.g. lsst.sal.Telescope.mount")
    series.add_argument("fields", help="field names, comma-separated")
    series.add_argument("--start", type=_tai_argument, help="ISO TAI or TAI seconds (default: "
                        "an hour before --end)")  # fmt: skip
    series.add_argument("--end", type=_tai_argument, help="ISO TAI or TAI seconds (default: now)")
    series.add_argument("--index", type=int, help="the CSC's index (salIndex) only")
    efd.set_defaults(func=_efd)


async def _efd(args: argparse.Namespace, settings: Settings) -> int:
    client = EfdClient(args.efd or settings.efd)
    try:
        if args.efd_command == "topics":
            return await show_topics(client, sys.stdout)
        if args.efd_command == "fields":
            return await show_fields(client, args.topic, sys.stdout)
        fields = [f.strip() for f in args.fields.split(",") if f.strip()]
        return await show_series(
            client, args.topic, fields, sys.stdout, start=args.start, end=args.end,
            index=args.index,
        )  # fmt: skip
    finally:
        client.close()
