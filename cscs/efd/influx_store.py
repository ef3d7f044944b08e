"""The EFD in InfluxDB 1.x (being written by the efd-store branch)."""

from __future__ import annotations

from cscs.efd.memory import MemoryStore

__all__ = ["InfluxStore"]


class InfluxStore(MemoryStore):
    """Placeholder with the final signature until the InfluxDB store lands."""

    def __init__(self, host: str, port: int, database: str) -> None:
        super().__init__()
        self.url = f"influxdb://{host}:{port}/{database}"
