"""The data query of OCS Batch: which archived images a job processes, as an operator
types it.

``dataQuery`` arrives from the bus, so it is parsed here by a small tokenizer and a
recursive-descent parser into a :class:`DataQuery` of plain values; the catalog turns
that into SQL with bound parameters (:meth:`~cscs.catalog.Catalog.select`). No text of
the query ever becomes SQL. A query that cannot be parsed is a :class:`QueryError`
that names the character where it went wrong and what was expected there.

Syntax (``docs/ocs-batch.md``)::

    query     := condition ( "and" condition )*
    condition := field "=" item | field "in" "(" item ( "," item )* ")"
    item      := value | value ".." value          (a range, ends included)
    value     := word | "double-quoted text"
    field     := instrument | dayObs | imageType | image | groupId | filter | sensor

e.g. ``instrument = LATISS and dayObs = 20261121 and imageType in (BIAS, DARK)`` or
``image = AT_O_20261121_000001..AT_O_20261121_000010 and sensor = R00_S00``. Keywords
and field names are case-insensitive; values are not. Ranges are for ``dayObs`` and
``image`` only, where the order means something.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cscs.camera.naming import ImageName, check_day_obs, check_sensor

__all__ = ["FIELDS", "MAX_QUERY_LENGTH", "Condition", "DataQuery", "QueryError", "parse_query"]

MAX_QUERY_LENGTH = 4000  # characters: a query is a line an operator types
_MAX_ITEMS = 1000  # values and ranges in one query, all conditions together

#: The fields a query may name, canonical spelling, each with what its values must be.
FIELDS = ("instrument", "dayObs", "imageType", "image", "groupId", "filter", "sensor")
_BY_LOWER = {name.lower(): name for name in FIELDS}
_RANGED = {"dayObs", "image"}
_WORD = re.compile(r"[A-Za-z0-9_:+\-]+(?:\.[A-Za-z0-9_:+\-]+)*")
_QUOTED = re.compile(r'"([^"\\\x00-\x1f]{0,200})"')
_SPACE = re.compile(r"\s+")
_PUNCTUATION = ("..", "(", ")", ",", "=")
_INSTRUMENT = re.compile(r"[A-Za-z][A-Za-z0-9]{0,31}")
_IMAGE_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}")


class QueryError(ValueError):
    """A query that cannot be parsed; ``position`` is the 0-based character offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"data query: {message} (at character {position + 1})")
        self.position = position


@dataclass(frozen=True)
class Condition:
    """One ``field = …`` or ``field in (…)``: the field takes any of ``values`` or lies
    in any of ``ranges`` (both ends included)."""

    field: str
    values: tuple[str, ...] = ()
    ranges: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DataQuery:
    """Every condition must hold (``and``)."""

    text: str
    conditions: tuple[Condition, ...]

    def of(self, field: str) -> list[Condition]:
        return [c for c in self.conditions if c.field == field]


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "text" (quoted), or the punctuation itself, or "end"
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        space = _SPACE.match(text, position)
        if space:
            position = space.end()
            continue
        punctuation = next((p for p in _PUNCTUATION if text.startswith(p, position)), None)
        if punctuation is not None:
            tokens.append(_Token(punctuation, punctuation, position))
            position += len(punctuation)
            continue
        quoted = _QUOTED.match(text, position)
        if quoted:
            tokens.append(_Token("text", quoted.group(1), position))
            position = quoted.end()
            continue
        word = _WORD.match(text, position)
        if word:
            tokens.append(_Token("word", word.group(), position))
            position = word.end()
            continue
        if text[position] == '"':
            raise QueryError(
                "a quoted value must end with '\"' on the same line, within 200 "
                "characters, and hold no '\\' or control characters",
                position,
            )
        raise QueryError(f"unexpected character {text[position]!r}", position)
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0
        self.items = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def take(self, kind: str, expected: str) -> _Token:
        token = self.token
        if token.kind != kind:
            found = "the end of the query" if token.kind == "end" else repr(token.text)
            raise QueryError(f"expected {expected}, found {found}", token.position)
        self.index += 1
        return token

    def keyword(self, word: str) -> bool:
        if self.token.kind == "word" and self.token.text.lower() == word:
            self.index += 1
            return True
        return False

    def query(self) -> list[Condition]:
        conditions = [self.condition()]
        while self.keyword("and"):
            conditions.append(self.condition())
        if self.token.kind != "end":
            self.take("end", "'and' or the end of the query")
        return conditions

    def condition(self) -> Condition:
        token = self.take("word", f"a field ({', '.join(FIELDS)})")
        field = _BY_LOWER.get(token.text.lower())
        if field is None:
            raise QueryError(
                f"unknown field {token.text[:40]!r}; one of {', '.join(FIELDS)}", token.position
            )
        if self.token.kind == "=":
            self.index += 1
            items = [self.item(field)]
        elif self.keyword("in"):
            self.take("(", "'(' after 'in'")
            items = [self.item(field)]
            while self.token.kind == ",":
                self.index += 1
                items.append(self.item(field))
            self.take(")", "',' or ')'")
        else:
            self.take("=", f"'=' or 'in' after {field}")
            raise AssertionError("unreachable")  # take() raised
        values = tuple(i for i in items if isinstance(i, str))
        ranges = tuple(i for i in items if isinstance(i, tuple))
        return Condition(field, values, ranges)

    def item(self, field: str) -> str | tuple[str, str]:
        self.items += 1
        if self.items > _MAX_ITEMS:
            raise QueryError(f"more than {_MAX_ITEMS} values in one query", self.token.position)
        low = self.value(field)
        if self.token.kind != "..":
            return low
        if field not in _RANGED:
            raise QueryError(
                f"{field} takes no range ('..'); only dayObs and image do", self.token.position
            )
        self.index += 1
        start = self.token.position
        high = self.value(field)
        if field == "image" and ImageName.parse(low).code != ImageName.parse(high).code:
            raise QueryError("an image range must be of one camera (same prefix)", start)
        if high < low:
            raise QueryError(f"the range {low}..{high} is empty (its end comes first)", start)
        return (low, high)

    def value(self, field: str) -> str:
        token = self.token
        if token.kind not in ("word", "text"):
            self.take("word", f"a value for {field}")
        self.index += 1
        try:
            return _check(field, token.text)
        except ValueError as exc:
            raise QueryError(f"{field}: {exc}", token.position) from None


def _check(field: str, value: str) -> str:
    """``value`` if it can be a value of ``field`` (so a typo is an error, not an empty
    selection); ValueError saying what was expected."""
    if field == "dayObs":
        return check_day_obs(value)
    if field == "image":
        return str(ImageName.parse(value))
    if field == "sensor":
        return check_sensor(value)
    if field == "instrument" and not _INSTRUMENT.fullmatch(value):
        raise ValueError(f"not an instrument name (e.g. LATISS): {value[:40]!r}")
    if field == "imageType" and not _IMAGE_TYPE.fullmatch(value):
        raise ValueError(f"not an image type (e.g. BIAS): {value[:40]!r}")
    if not value:
        raise ValueError("an empty value")
    return value


def parse_query(text: str) -> DataQuery:
    """The query ``text`` as conditions; QueryError with the position of the fault."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"longer than {MAX_QUERY_LENGTH} characters", MAX_QUERY_LENGTH)
    if not text.strip():
        raise QueryError(
            "empty; name the images, e.g. 'instrument = LATISS and dayObs = 20261121'", 0
        )
    return DataQuery(text, tuple(_Parser(text).query()))
