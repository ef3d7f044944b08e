"""Every CSC and simulator that ``cscs run NAME`` can start, by name.

Imports are lazy so that starting one CSC does not import every other one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from cscs.core.csc import BaseCsc

__all__ = ["REGISTRY", "CscEntry", "find"]


@dataclass(frozen=True)
class CscEntry:
    name: str
    target: str  # "module:Class"
    summary: str

    def load(self) -> type[BaseCsc]:
        module_name, _, class_name = self.target.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        if not (isinstance(cls, type) and issubclass(cls, BaseCsc)):
            raise TypeError(f"{self.target} is not a CSC class")
        return cls


REGISTRY: tuple[CscEntry, ...] = (
    CscEntry("Test", "cscs.core.testing:TestCsc", "framework test CSC (every ack outcome)"),
    CscEntry(
        "Camera",
        "sim.daq.camera:CameraCsc",
        "simulated camera and DAQ (1 LATISS, 2 ComCam, 3 LSSTCam)",
    ),
    CscEntry("Telescope", "sim.ocs.telescope:TelescopeCsc", "simulated mount, dome and filter"),
    CscEntry("Weather", "sim.ocs.weather:WeatherCsc", "simulated site weather station"),
    CscEntry(
        "Archiver",
        "cscs.archiver.csc:ArchiverCsc",
        "every image into the archive and its catalog (index = camera)",
    ),
    CscEntry(
        "HeaderService",
        "cscs.header_service.csc:HeaderServiceCsc",
        "FITS header metadata for each image (index = camera)",
    ),
)


def find(name: str) -> CscEntry:
    """The entry named ``name`` (case-insensitive), or a ValueError listing the names."""
    for entry in REGISTRY:
        if entry.name.lower() == name.lower():
            return entry
    known = ", ".join(e.name for e in REGISTRY)
    raise ValueError(f"no CSC named {name!r}; known: {known}")
