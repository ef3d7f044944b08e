"""Data queries over the raws, evaluated by the Butler itself: a ``where`` expression in
the Butler's own language (``instrument = 'LATISS' AND exposure.day_obs = 20261121``,
``exposure.seq_num IN (1..10)``, ``detector = dets`` with ``bind``), over every
instrument's ``*/raw/all``. The text goes to the Butler's parser as it is and values
only ever as bind values: nothing here builds SQL, or a query, out of text.

What is bounded before the Butler sees anything: the text's length, the bind's size
and value types, the number of results. Whatever the Butler refuses (syntax, with
where; an unknown dimension, column or bind name) is a QueryRefusedError naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy.exc
from lsst.daf.butler import Butler, ButlerUserError, DatasetRef
from lsst.daf.butler._exceptions_legacy import RegistryError  # what the registry raises

from cscs.repository.errors import QueryRefusedError, RepositoryError

__all__ = ["MAX_BIND_VALUES", "MAX_LIMIT", "MAX_WHERE_LENGTH", "RAW_COLLECTIONS", "RawRef",
           "check_bind", "query_raws", "raw_instruments"]  # fmt: skip

MAX_WHERE_LENGTH = 4000  # characters: a query a person types, or a job builds with bind
MAX_BIND_VALUES = 10_000  # bound values in all (an IN list counts each)
MAX_BIND_TEXT = 256  # characters per string value
MAX_LIMIT = 100_000  # raws per query: a night of LSSTCam is ~190 000 files
RAW_COLLECTIONS = "*/raw/all"
_ORDER = ("exposure.day_obs", "exposure.seq_num", "detector")


@dataclass(frozen=True)
class RawRef:
    """A raw the repository holds: which image and detector, and its file."""

    image_name: str
    sensor: str
    instrument: str
    exposure_id: int
    detector: int
    path: Path


def query_raws(
    butler: Butler, where: str, *, bind: Mapping[str, object] | None = None, limit: int
) -> list[RawRef]:
    """The raws ``where`` selects, oldest first (day, sequence number, detector); see the
    module's documentation for what is refused."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise QueryRefusedError(f"limit must be 1 to {MAX_LIMIT}, not {str(limit)[:20]}")
    _check_where(where)
    values = check_bind(bind)
    try:
        found: list[RawRef] = []
        for instrument in raw_instruments(butler):
            # One query per instrument, so that a detector or an exposure number means
            # each instrument's own (``detector = 4``) without naming the instrument.
            refs = butler.query_datasets(
                "raw", collections=f"{instrument}/raw/all", where=where, bind=values,
                data_id={"instrument": instrument}, find_first=False,
                with_dimension_records=True, order_by=_ORDER, limit=limit + 1, explain=False,
            )  # fmt: skip
            found.extend(_raw_ref(butler, ref) for ref in refs)
            if len(found) > limit:
                raise QueryRefusedError(
                    f"more than {limit} raws match; narrow the query (a day, an exposure "
                    "range, detectors) or raise its limit"
                )
        return sorted(found, key=_oldest_first)
    except QueryRefusedError:
        raise
    except sqlalchemy.exc.SQLAlchemyError as exc:
        if isinstance(exc, sqlalchemy.exc.DataError | sqlalchemy.exc.ProgrammingError):
            raise QueryRefusedError(f"the registry refused the query: {_first_line(exc)}") from None
        raise RepositoryError(f"cannot query the repository: {_first_line(exc)}") from exc
    except (ButlerUserError, RegistryError, LookupError, ValueError, TypeError,
            NotImplementedError, RecursionError, OverflowError) as exc:  # fmt: skip
        raise QueryRefusedError(_explained(exc, values)) from None
    except AssertionError as exc:
        # This daf_butler's parser asserts what its grammar lets through: a bare value
        # (``where="0"``) is not a condition.
        raise QueryRefusedError(
            f"query refused: not a condition the Butler can evaluate ({_first_line(exc)})"
        ) from None


def raw_instruments(butler: Butler) -> list[str]:
    """The instruments that have a raw collection (``{instrument}/raw/all``)."""
    return sorted(name.partition("/")[0] for name in butler.collections.query(RAW_COLLECTIONS))


def _oldest_first(ref: RawRef) -> tuple[str, str, str, int]:
    """Day, then sequence number (``AT_O_20261121_000001``), then instrument, detector."""
    return (ref.image_name[5:13], ref.image_name[14:], ref.instrument, ref.detector)


def check_bind(bind: Mapping[str, object] | None) -> dict[str, object]:
    """``bind`` as the Butler takes it, if every name is an identifier and every value a
    number, a short string, or a list of them; QueryRefusedError naming the first that
    is not."""
    if bind is None:
        return {}
    if not isinstance(bind, Mapping):
        raise QueryRefusedError("bind must be a mapping of names to values")
    count = 0
    checked: dict[str, object] = {}
    for name, value in bind.items():
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 64:
            raise QueryRefusedError(f"bind name {str(name)[:40]!r} is not an identifier")
        items = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
        count += len(items)
        if count > MAX_BIND_VALUES:
            raise QueryRefusedError(f"more than {MAX_BIND_VALUES} bind values")
        for item in items:
            _check_value(name, item)
        checked[name] = tuple(items) if isinstance(value, list | tuple | set | frozenset) else value
    return checked


def _check_value(name: str, value: object) -> None:
    if isinstance(value, str):
        if len(value) > MAX_BIND_TEXT or "\x00" in value:
            raise QueryRefusedError(
                f"bind value of {name!r} is longer than {MAX_BIND_TEXT} characters or has NUL"
            )
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryRefusedError(
            f"bind value of {name!r} is a {type(value).__name__}: numbers and strings only"
        )
    elif isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise QueryRefusedError(f"bind value of {name!r} does not fit 64 bits")


def _check_where(where: str) -> None:
    if not isinstance(where, str):
        raise QueryRefusedError("the query must be text")
    if len(where) > MAX_WHERE_LENGTH:
        raise QueryRefusedError(
            f"the query is {len(where)} characters, more than {MAX_WHERE_LENGTH}: use bind values"
        )
    if "\x00" in where:
        raise QueryRefusedError("the query has a NUL character")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _explained(exc: BaseException, bind: Mapping[str, object]) -> str:
    """The Butler's own message, bounded, and where it says too little: the place of a
    syntax error (from the parser's error under it), and for an unknown name the bind
    names that were given (a name in the text is a dimension, a column or a bind name)."""
    if isinstance(exc, RecursionError):
        return "query refused: the query nests too deeply"
    text = str(exc).strip() or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and type(cause).__name__ == "ParserEOFError":
        text = "syntax error: the query ends where more was expected"
    elif cause is not None and isinstance(getattr(cause, "pos", None), int):
        where, pos = str(getattr(cause, "expression", "")), int(getattr(cause, "pos", 0))
        token = str(getattr(cause, "token", ""))[:40]
        start = max(0, pos - 60)
        text = (f"syntax error at or near {token!r}, character {pos + 1}:\n"
                f"  {where[start:pos + 60]}\n  {' ' * (pos - start)}^")  # fmt: skip
    elif text.startswith("Unrecognized identifier"):
        given = ", ".join(sorted(bind)[:20]) or "none"
        text += f" It is not a dimension, and not a bind name (bind names given: {given})."
    return f"query refused: {text[:600]}"


def _raw_ref(butler: Butler, ref: DatasetRef) -> RawRef:
    data_id = ref.dataId
    exposure = data_id.records["exposure"]
    detector = data_id.records["detector"]
    assert exposure is not None  # with_dimension_records=True
    assert detector is not None
    return RawRef(
        image_name=str(exposure.obs_id), sensor=str(detector.full_name),
        instrument=str(data_id["instrument"]), exposure_id=int(data_id["exposure"]),
        detector=int(data_id["detector"]),
        path=Path(butler.getURI(ref).ospath),
    )  # fmt: skip
