"""The header service's configuration: where documents go, the keyword map, how many
exposures at once, and when headers are rebuilt from the EFD (``docs/header-service.md``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from cscs.core.config import ConfigSchema
from cscs.header_service.collect import KeywordRule
from cscs.header_service.derived import DERIVED_KEYWORDS
from cscs.header_service.detectors import HARDWARE_KEYWORDS

__all__ = ["DERIVED", "HeaderServiceConfig"]

DERIVED = frozenset(DERIVED_KEYWORDS) | frozenset(HARDWARE_KEYWORDS)


class HeaderServiceConfig(ConfigSchema):
    output_dir: str = ""
    """Where header documents go (`{output_dir}/{dayObs}/{image}.yaml`); empty for
    `$CSCS_STATE_DIR/headers/HeaderService-{index}`."""
    keywords: list[KeywordRule] = []
    max_open_exposures: int = Field(default=1000, ge=1, le=100_000)
    """Exposures collected at once; a startIntegration beyond them is dropped, with a
    warning (the camera has a few open at most: more is a flood)."""
    rebuild_delay: float = Field(default=5.0, ge=0.0, le=600.0)
    """Seconds before a header is rebuilt from the EFD after a live one came out
    incomplete, or tried again when the image's end is not in the EFD yet (the EFD
    writer writes in batches)."""
    rebuild_lookback: float = Field(default=43200.0, ge=0.0, le=30 * 86400.0)
    """Seconds looked back at enable for images to rebuild when this service has
    written no header yet (otherwise: since its last header)."""

    def output_path(self) -> Path | None:
        return Path(self.output_dir).expanduser() if self.output_dir else None

    @field_validator("keywords")
    @classmethod
    def _unique(cls, rules: list[KeywordRule]) -> list[KeywordRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.keyword in DERIVED:
                raise ValueError(f"{rule.keyword} is computed by the header service, not mapped")
            if rule.keyword in seen:
                raise ValueError(f"keyword {rule.keyword} is mapped twice")
            seen.add(rule.keyword)
        return rules
