"""Which archived files a job processes: its ``dataQuery``, a Butler ``where``
expression (``instrument = 'LATISS' AND exposure.day_obs = 20261121``), with the bind
values of its ``config`` (``{"bind": {"first": 10}}``), evaluated by the Butler over the
archive's repository (:meth:`cscs.repository.Repository.query_raws`).

No text of a query ever becomes SQL here, nor is a value ever formatted into one: the
Butler parses the expression and binds the values, and says what is wrong with one it
cannot take (:class:`~cscs.repository.QueryRefusedError`). The bind values are checked
where they are parsed (names, types, how many, how long): they arrive from the bus.

The raws the Butler finds are then joined with the archive catalog's rows (checksums,
provenance: what a job's tasks check and record). The catalog is the archive's truth: a
raw the repository lists but the catalog does not, or under another path, is not
processed — the whole query is refused, naming it, rather than a job run on part of
what the operator asked for.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence

from cscs.catalog import ArchivedFile, Catalog
from cscs.ocs_batch.shared_repository import RepositoryCalls

__all__ = ["MAX_BIND_NAMES", "MAX_BIND_VALUES", "BindValue", "SelectionError", "parse_bind",
           "select_files"]  # fmt: skip

MAX_BIND_NAMES = 20  # names in one job's bind
MAX_BIND_VALUES = 1000  # values in all (a list counts each of its items)
MAX_BIND_TEXT = 200  # characters of one string value
_BIND_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SHOWN = 3  # files named in a refusal

Scalar = str | int | float
BindValue = Scalar | list[Scalar]


class SelectionError(ValueError):
    """The query's selection cannot be processed; the message is the reason, for the ack."""


def parse_bind(value: object) -> dict[str, BindValue]:
    """A job's bind values (``config["bind"]``; None: none): names that can be Butler
    identifiers, each a string, integer, finite number or a list of those;
    ValueError naming the first that is not."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"bind must be a JSON object of names and values, not "
                         f"{type(value).__name__}")  # fmt: skip
    if len(value) > MAX_BIND_NAMES:
        raise ValueError(f"bind has {len(value)} names; at most {MAX_BIND_NAMES}")
    bind: dict[str, BindValue] = {}
    count = 0
    for name, item in value.items():
        if not _BIND_NAME.fullmatch(name):
            raise ValueError(
                f"bind name {name[:40]!r} is not an identifier (letters, digits, _; 64 at most)"
            )
        if isinstance(item, list):
            if not item:
                raise ValueError(f"bind {name}: an empty list selects nothing")
            bind[name] = [_scalar(name, i) for i in item[: MAX_BIND_VALUES + 1]]
            count += len(item)
        else:
            bind[name] = _scalar(name, item)
            count += 1
        if count > MAX_BIND_VALUES:
            raise ValueError(f"bind holds more than {MAX_BIND_VALUES} values")
    return bind


def _scalar(name: str, value: object) -> Scalar:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(
            f"bind {name}: {type(value).__name__} is not a string, integer or number "
            "(or a list of those)"
        )
    if isinstance(value, str) and len(value) > MAX_BIND_TEXT:
        raise ValueError(f"bind {name}: a string of more than {MAX_BIND_TEXT} characters")
    if isinstance(value, str) and any(ord(c) < 0x20 for c in value):
        raise ValueError(f"bind {name}: a string with a control character")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"bind {name}: {value} is not a finite number")
    if isinstance(value, int) and abs(value) >= 2**63:
        raise ValueError(f"bind {name}: {str(value)[:30]} does not fit in 64 bits")
    return value


def select_files(
    repository: RepositoryCalls,
    catalog: Catalog,
    where: str,
    bind: Mapping[str, BindValue],
    limit: int,
) -> list[ArchivedFile]:
    """The catalog rows of the raws ``where`` selects in the repository, oldest exposure
    first (blocking: the Butler and the catalog are read). ``QueryRefusedError`` (a
    ValueError) from the Butler for a query it cannot evaluate or that selects more than
    ``limit`` files; SelectionError for an empty query or raws the catalog does not
    hold as the repository does; RepositoryError / CatalogError if either database fails."""
    if not where.strip():
        raise SelectionError(
            "the data query is empty; name the images, e.g. "
            "\"instrument = 'LATISS' AND exposure.day_obs = 20261121\""
        )
    refs = repository.query_raws(where, bind=dict(bind), limit=limit)
    rows = {(r.image_name, r.sensor): r for r in catalog.files_named(
        [(ref.image_name, ref.sensor) for ref in refs])}  # fmt: skip
    missing: list[str] = []
    moved: list[str] = []
    selected: list[ArchivedFile] = []
    for ref in refs:
        row = rows.get((ref.image_name, ref.sensor))
        if row is None:
            missing.append(f"{ref.image_name} {ref.sensor}")
        elif not _same_file(row.path, str(ref.path)):
            moved.append(f"{ref.image_name} {ref.sensor} ({ref.path} in the repository, "
                         f"{row.path} in the catalog)")  # fmt: skip
        else:
            selected.append(row)
    if missing:
        raise SelectionError(
            f"{len(missing)} raws the query selects are in the repository but not in the "
            f"archive catalog (the archive's truth): {_some(missing)}"
        )
    if moved:
        raise SelectionError(
            f"{len(moved)} raws the query selects are under another path in the repository "
            f"than in the archive catalog: {_some(moved)}"
        )
    return selected


def _same_file(catalog_path: str, repository_path: str) -> bool:
    if os.path.normpath(catalog_path) == os.path.normpath(repository_path):
        return True
    return os.path.realpath(catalog_path) == os.path.realpath(repository_path)


def _some(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_SHOWN])
    return shown if len(items) <= _SHOWN else f"{shown}; and {len(items) - _SHOWN} more"
