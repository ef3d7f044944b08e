"""Layered configuration: defaults, site, override; errors name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cscs.core.config import ConfigSchema, ConfigSource, list_overrides, load_configuration
from cscs.core.errors import ConfigurationError


class Schema(ConfigSchema):
    name: str = "default"
    limits: dict[str, float] = {}
    retries: int = 3


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "_init.yaml").write_text("schema_version: 1\nlimits: {low: 1, high: 9}\n")
    (tmp_path / "_summit.yaml").write_text("name: summit\nlimits: {high: 5}\n")
    (tmp_path / "night.yaml").write_text("retries: 5\n")
    (tmp_path / "typo.yaml").write_text("retrys: 5\n")
    (tmp_path / "bad.yaml").write_text("retries: [oops\n")
    return tmp_path


def test_layers_merge_in_order(config_dir: Path) -> None:
    """Site updates defaults key by key; the override comes last."""
    applied = load_configuration(Schema, ConfigSource(config_dir, "summit"), "night")
    assert applied.config == Schema(name="summit", limits={"low": 1, "high": 5}, retries=5)
    assert applied.names == "_init.yaml,_summit.yaml,night.yaml"


def test_overrides_are_listed(config_dir: Path) -> None:
    """Files not starting with _ are the overrides start accepts."""
    assert list_overrides(ConfigSource(config_dir)) == ["bad.yaml", "night.yaml", "typo.yaml"]


def test_version_changes_with_values(config_dir: Path) -> None:
    """configurationApplied.version is a digest of the merged values."""
    source = ConfigSource(config_dir)
    assert load_configuration(Schema, source).version != (
        load_configuration(Schema, source, "night.yaml").version
    )


@pytest.mark.parametrize(
    ("override", "site", "message"),
    [
        ("missing", None, "override 'missing' not found .* available: bad.yaml, night.yaml"),
        ("typo", None, "typo.yaml is invalid: retrys: Extra inputs"),
        ("bad", None, r"bad.yaml line \d+ is not valid YAML"),
        ("", "moon", "site configuration .*_moon.yaml not found"),
        ("../etc/passwd", None, "not found"),
    ],
)
def test_errors_name_the_cause(config_dir: Path, override: str, site: str, message: str) -> None:
    """A bad layer is refused with the file and field in the message."""
    with pytest.raises(ConfigurationError, match=message):
        load_configuration(Schema, ConfigSource(config_dir, site), override)


def test_schema_version_mismatch(config_dir: Path) -> None:
    """A file written for another schema version is refused, not half-read."""
    (config_dir / "future.yaml").write_text("schema_version: 2\n")
    with pytest.raises(ConfigurationError, match="schema_version 2"):
        load_configuration(Schema, ConfigSource(config_dir), "future")
