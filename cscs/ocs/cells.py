"""Cells of the operators' tables, from values anyone on the bus could have published:
nothing reaches the terminal as a control sequence, no cell is longer than its limit,
and a value that cannot be what it says shows as ``?``."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["age_cell", "count_cell", "table", "text_cell"]


def text_cell(value: object, limit: int) -> str:
    text = value[: limit * 4] if isinstance(value, str) else str(value)[: limit * 4]
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def count_cell(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
        return str(value)
    return "?"


def age_cell(now: float, since: object) -> str:
    """How long ago ``since`` (TAI seconds) was: s, min or h; ``?`` if it cannot be."""
    if isinstance(since, bool) or not isinstance(since, int | float):
        return "?"
    if not -1e12 < since < 1e12 or not 0 <= now - since < 10 * 365 * 86400:
        return "?"  # also a 400-digit integer, which no float arithmetic survives
    seconds = now - float(since)
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain aligned text, a header line first."""
    lines = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
