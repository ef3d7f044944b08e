"""The QC thresholds the page colours cells by: the Telemetry Gateway's own rules.

A cell coloured by other levels than the alarms are raised by would show a seeing of
1.3" as fine while the gateway calls it WARNING. So the page reads the gateway's
configuration files (the same layers, from the same directory) and follows the
gateway's ``configurationApplied`` event: when the gateway is started with another
override, the page loads that override too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cscs.core.config import ConfigSource, load_configuration
from cscs.core.errors import ConfigurationError
from cscs.core.settings import Settings
from cscs.telemetry_gateway.interface import CONFIG_DIR, GatewayConfig

__all__ = ["gateway_config_source", "threshold_rules"]


def gateway_config_source(settings: Settings) -> ConfigSource:
    directory = settings.config_dir / "TelemetryGateway" if settings.config_dir else None
    return ConfigSource(directory or CONFIG_DIR, settings.site)


def _override(applied: str) -> str:
    """The override among the files ``configurationApplied`` lists ("" for none)."""
    names = [Path(n.strip()).name for n in applied.split(",") if n.strip()]
    chosen = [n for n in names if not n.startswith("_")]
    return chosen[-1] if chosen else ""


def threshold_rules(source: ConfigSource, applied: str = "") -> list[dict[str, Any]]:
    """The gateway's rules as the page draws them; ``applied`` is the gateway's
    ``configurationApplied.configurations``. ConfigurationError if they cannot be read."""
    override = _override(applied)
    try:
        config = load_configuration(GatewayConfig, source, override).config
    except ConfigurationError:
        if not override:
            raise
        config = load_configuration(GatewayConfig, source).config  # an override of elsewhere
    return [
        {
            "name": rule.name,
            "metric": rule.metric,
            "direction": rule.direction,
            "warning": rule.warning,
            "serious": rule.serious,
            "critical": rule.critical,
            "instrument": rule.instrument,
        }
        for rule in config.rules
    ]
