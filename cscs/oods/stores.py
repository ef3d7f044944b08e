"""The real stores behind the OODS's ports: the Butler repository (``cscs.repository``)
and ConsDB (``cscs.consdb``). Until those libraries are merged, opening them fails
with the reason (the CSC's ``start`` is refused, naming it)."""

from __future__ import annotations

from pathlib import Path

from cscs.oods.interface import OodsConfig
from cscs.oods.ports import ConsDbPort, RegistryPort, StoreUnavailableError

__all__ = ["open_stores"]


def open_stores(config: OodsConfig, root: Path) -> tuple[RegistryPort, ConsDbPort]:
    raise StoreUnavailableError("the repository and ConsDB libraries are not installed")
