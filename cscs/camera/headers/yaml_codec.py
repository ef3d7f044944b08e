"""The header document as YAML bytes: written by the header service, read back by the
archiver.

Written as JSON, which is YAML (1.2) too, one card per line (docs/decisions/0042): an
LSSTCam document of 189 detectors is dumped in ~24 ms and read in ~31 ms by pydantic's
own JSON parser, where PyYAML took ~130 ms and ~260 ms, on the path from ``endReadout``
to the first file archived. Documents in other YAML (an earlier version's, a person's)
are still read, through PyYAML.

No file I/O here (bytes in, bytes out; :mod:`~cscs.camera.headers.reading` fetches
them). What is read is untrusted, so YAML's shape is checked before anything is built
from it (:func:`check_yaml_shape`), and what is written never holds what that check
refuses; the JSON parser bounds nesting itself.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import ValidationError

from cscs.camera.headers.document import HeaderDocument
from cscs.core.schema import first_problem

__all__ = ["check_yaml_shape", "dump_header_document", "parse_header_document"]

_MAX_YAML_DEPTH = 8  # a document nests 4 deep (itself, detectors, a card list, a card)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_yaml_shape(data: bytes) -> None:
    """Refuse YAML a header document never is, before it is built: an alias (a few
    bytes that stand for a huge structure), or nesting deeper than a document's. Events
    are read one at a time, so a refusal comes at the first offending one."""
    depth = 0
    for event in yaml.parse(data, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise ValueError("a YAML alias: header documents have none")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_YAML_DEPTH:
                raise ValueError(f"nested deeper than {_MAX_YAML_DEPTH}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def dump_header_document(document: HeaderDocument) -> bytes:
    """The document as JSON, a card per line (empty units and comments left out), that
    YAML 1.1 readers (PyYAML) read to the same values too."""
    lines = []
    for key, value in document.model_dump(exclude_defaults=True).items():
        if isinstance(value, list):
            lines.append(f"{json.dumps(key)}: {_cards(value, 1)}")
        elif isinstance(value, dict):
            units = [f"{json.dumps(k)}: {_cards(cards, 2)}" for k, cards in value.items()]
            lines.append(f"{json.dumps(key)}: {{" + "".join(f"\n  {u}," for u in units)[:-1] + "}")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
    return ("{" + ",\n ".join(lines) + "}\n").encode()


def _cards(cards: list[dict[str, Any]], depth: int) -> str:
    indent = "\n" + " " * (depth + 1)
    return "[" + ",".join(indent + _card(c) for c in cards) + "]"


def _card(card: dict[str, Any]) -> str:
    """A card as JSON, a float's exponent written as YAML 1.1 has it (``1.0e-05``, not
    ``1e-05``, which PyYAML reads as text)."""
    text = json.dumps(card)
    value = card.get("value")
    if isinstance(value, float) and "e" in (digits := repr(value)) and "." not in digits:
        text = text.replace(f'"value": {digits}', f'"value": {digits.replace("e", ".0e")}', 1)
    return text


def parse_header_document(data: bytes) -> HeaderDocument:
    """Read a header document; ValueError naming what is wrong with it.

    JSON (what :func:`dump_header_document` writes) is read by pydantic's parser. Any
    other YAML's shape is checked first (:func:`check_yaml_shape`: no aliases,
    shallow), because the C loader builds deep nesting by recursion and crashes the
    process on a few hundred kilobytes of brackets."""
    if data.lstrip()[:1] == b"{":
        try:
            return HeaderDocument.model_validate_json(data)
        except ValidationError as exc:
            if exc.errors()[0]["type"] != "json_invalid":
                raise ValueError(first_problem(exc, "document")) from None
            # Not JSON (a YAML flow mapping, or not YAML either): read as YAML below.
    try:
        check_yaml_shape(data)
        raw: Any = yaml.load(data, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"a header document is a mapping, not {type(raw).__name__}")
    try:
        return HeaderDocument.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(first_problem(exc, "document")) from None
