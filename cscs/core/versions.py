"""Which software and which interface: what ``softwareVersions`` says (ICD §3, §7)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["ICD_VERSION", "SOFTWARE_VERSION"]

#: The version of the interface contract (docs/icd.md) implemented on the wire.
ICD_VERSION = "1.0"

try:
    SOFTWARE_VERSION = version("cscs")
except PackageNotFoundError:  # running from a source tree that was never installed
    SOFTWARE_VERSION = "0.0.0+unknown"
