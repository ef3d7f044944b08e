"""Values made fit for a ConsDB column, or refused: a value a column cannot hold honestly
(a string where a number goes, NaN, a string longer than the column, a number out of
the column's range) becomes NULL and a warning naming the column, the value and why.

Driven by the column's own type, as felis built it from the schema, so each schema's
lengths and kinds are the ones checked. Pure: no database.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import sqlalchemy as sa

__all__ = ["finite", "fit_row", "fit_value", "undefined"]

_INTEGER_RANGES = {
    "SMALLINT": 2**15,
    "INTEGER": 2**31,
    "BIGINT": 2**63,
}
_FLOAT_MAX = 3.4e38  # beyond a 4-byte float; PostgreSQL's REAL refuses it
_SHOWN = 40  # characters of a refused value shown in a warning


def undefined(value: object) -> bool:
    """A value the header does not have: absent, or the FITS undefined value (astropy's
    ``Undefined``, which is none of the types a header value has)."""
    return value is None or not isinstance(value, str | int | float | bool | datetime.datetime)


def finite(value: object) -> float | None:
    """``value`` as a finite float, or None: not a number (a bool is not one), NaN or
    infinite, or an integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def fit_value(column: sa.Column[Any], value: object, where: str, warnings: list[str]) -> object:
    """``value`` as ``column`` holds it, or None (with a warning in ``warnings`` unless
    the value was simply undefined)."""
    if undefined(value):
        if value is not None and type(value).__name__ != "Undefined":
            warnings.append(_refused(column, value, where, f"a {type(value).__name__}"))
        return None
    kind = column.type.python_type
    reason: str | None
    if kind is bool:
        reason = None if isinstance(value, bool) else "not true or false"
    elif kind is int:
        reason = _integer_problem(column, value)
    elif kind is float:
        reason = _float_problem(value)
    elif kind is str:
        reason = _string_problem(column, value)
    elif kind is datetime.datetime:
        reason = None if isinstance(value, datetime.datetime) else "not a time"
    else:  # pragma: no cover - the ConsDB schemas have no other kinds
        reason = f"a column of type {column.type} is not filled by this code"
    if reason is not None:
        warnings.append(_refused(column, value, where, reason))
        return None
    if kind is float:
        return float(value)  # type: ignore[arg-type]
    if kind is int:
        return int(value)  # type: ignore[call-overload]
    return value


def fit_row(
    table: sa.Table, values: dict[str, object], where: str, warnings: list[str]
) -> dict[str, object]:
    """The ``values`` of ``table``'s columns made fit; names the table lacks are left out
    (the three schemas differ a little: LATISS has a dome azimuth, the others not)."""
    return {
        name: fit_value(table.c[name], value, where, warnings)
        for name, value in values.items()
        if name in table.c
    }


def _integer_problem(column: sa.Column[Any], value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "not a number"
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return "not a whole number"
    limit = _INTEGER_RANGES.get(type(column.type).__name__.upper(), 2**31)
    if not -limit <= int(value) < limit:
        return "out of the column's range"
    return None


def _float_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "not a number"
    number = finite(value)
    if number is None:
        return "not finite"
    if abs(number) > _FLOAT_MAX:
        return "out of the column's range"
    return None


def _string_problem(column: sa.Column[Any], value: object) -> str | None:
    if not isinstance(value, str):
        return "not a string"
    length = getattr(column.type, "length", None)
    if length is not None and len(value) > length:
        return f"longer than the column's {length} characters"
    if "\x00" in value:
        return "holds a NUL character"
    return None


def _refused(column: sa.Column[Any], value: object, where: str, reason: str) -> str:
    if isinstance(value, int) and value.bit_length() > 128:
        return f"{where}: {column.table.name}.{column.name} left NULL: an integer is {reason}"
    shown = repr(value)
    if len(shown) > _SHOWN:
        shown = shown[:_SHOWN] + f"… ({len(shown)} characters)"
    return f"{where}: {column.table.name}.{column.name} left NULL: {shown} is {reason}"
