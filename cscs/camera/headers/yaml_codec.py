"""The header document as YAML bytes: written by the header service, read back by the
archiver.

No file I/O here (bytes in, bytes out; :mod:`~cscs.camera.headers.reading` fetches
them). What is read is untrusted, so its YAML's shape is checked before anything is
built from it (:func:`check_yaml_shape`), and what is written never holds what that
check refuses.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from cscs.camera.headers.document import HeaderDocument
from cscs.core.schema import first_problem

__all__ = ["check_yaml_shape", "dump_header_document", "parse_header_document"]

_MAX_YAML_DEPTH = 8  # a document nests 4 deep (itself, detectors, a card list, a card)


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    def ignore_aliases(self, data: Any) -> bool:
        return True  # readers refuse aliases (check_yaml_shape): never write one


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
    """The document as YAML (empty units and comments left out)."""
    data = document.model_dump(exclude_defaults=True)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True).encode()


def parse_header_document(data: bytes) -> HeaderDocument:
    """Read a header document; ValueError naming what is wrong with it.

    The YAML's shape is checked first (:func:`check_yaml_shape`: no aliases, shallow),
    because the C loader builds deep nesting by recursion and crashes the process on a
    few hundred kilobytes of brackets."""
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
