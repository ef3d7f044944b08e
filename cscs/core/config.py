"""Layered, schema-validated configuration (defaults → site → override).

A configurable CSC declares a pydantic model (its schema, with a ``schema_version``)
and a directory of YAML files:

* ``_init.yaml`` — the defaults shipped with the package;
* ``_{site}.yaml`` — what differs at a site (``CSCS_SITE``), optional;
* ``{override}.yaml`` — named by the ``configurationOverride`` of ``start``.

Later layers update earlier ones key by key (nested mappings merge). The merged
mapping is validated into the typed model; every error names the file and the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cscs.core.errors import ConfigurationError

__all__ = [
    "AppliedConfiguration",
    "ConfigSchema",
    "ConfigSource",
    "default_config",
    "list_overrides",
    "load_configuration",
]

INIT_FILE = "_init.yaml"


class ConfigSchema(BaseModel):
    """Base of every CSC configuration schema: closed, so a typo is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1


C = TypeVar("C", bound=ConfigSchema)


@dataclass(frozen=True)
class ConfigSource:
    """Where a CSC's configuration files are and which site layer applies."""

    directory: Path
    site: str | None = None


@dataclass(frozen=True)
class AppliedConfiguration(Generic[C]):
    config: C
    files: tuple[Path, ...]
    version: str  # digest of the merged configuration: changes whenever any value does

    @property
    def names(self) -> str:
        return ",".join(f.name for f in self.files)


def default_config(schema: type[C], owner: str) -> C:
    """The configuration in force until ``start``: the schema's defaults."""
    try:
        return schema()
    except Exception as exc:  # a schema with a required field: a bug of the component
        raise TypeError(
            f"{owner}.config_schema {schema.__name__} must give every field a default "
            f"(they apply until start): {exc}"
        ) from None


def list_overrides(source: ConfigSource) -> list[str]:
    """The overrides ``start`` accepts: every YAML file not starting with ``_``."""
    if not source.directory.is_dir():
        return []
    return sorted(p.name for p in source.directory.glob("*.yaml") if not p.name.startswith("_"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read configuration {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise ConfigurationError(
            f"configuration {path}{where} is not valid YAML" + (f": {problem}" if problem else "")
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"configuration {path} must be a mapping of keys to values, got {type(data).__name__}"
        )
    return data


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _layer_files(source: ConfigSource, override: str) -> list[Path]:
    files = []
    init = source.directory / INIT_FILE
    if init.is_file():
        files.append(init)
    if source.site:
        site = source.directory / f"_{source.site}.yaml"
        if not site.is_file():
            raise ConfigurationError(
                f"site configuration {site} not found (CSCS_SITE={source.site!r})"
            )
        files.append(site)
    override = override.strip()
    if override:
        name = override if override.endswith(".yaml") else f"{override}.yaml"
        available = list_overrides(source)
        if name not in available or "/" in name:
            raise ConfigurationError(
                f"configuration override {override!r} not found in {source.directory}; "
                f"available: {', '.join(available) or 'none'}"
            )
        files.append(source.directory / name)
    return files


def load_configuration(
    schema: type[C], source: ConfigSource, override: str = ""
) -> AppliedConfiguration[C]:
    """Read, merge and validate the layers; raises ConfigurationError naming the cause."""
    files = _layer_files(source, override)
    merged: dict[str, Any] = {}
    for path in files:
        merged = _merge(merged, _read_yaml(path))
    version = merged.get("schema_version", 1)
    expected = schema.model_fields["schema_version"].default
    if version != expected:
        raise ConfigurationError(
            f"configuration schema_version {version!r} (from {_names(files)}) does not match "
            f"the version this software reads, {expected}"
        )
    try:
        config = schema.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"configuration {_names(files)} is invalid: {problems}") from None
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:12]
    return AppliedConfiguration(config, tuple(files), digest)


def _names(files: Sequence[Path]) -> str:
    return " + ".join(str(f) for f in files) or "(defaults)"
