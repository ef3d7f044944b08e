"""The interface document is generated from the code's declarations and never drifts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cscs import components
from cscs.core.interface_doc import render

DOC = Path(__file__).parents[1] / "docs" / "interface.md"


def test_interface_doc_is_current() -> None:
    """docs/interface.md is what `cscs interface-doc` would write from the schemas."""
    own = components.all_classes(components.PROJECT)
    assert DOC.read_text() == render(cls.interface for cls in own)


def test_every_component_is_registered() -> None:
    """`cscs run NAME` finds every CSC of the project and its simulators (entry points)."""
    assert components.names(components.PROJECT) == [
        "Archiver", "Camera", "EfdWriter", "HeaderService", "OCSBatch", "OODS", "TelemetryGateway",
        "Telescope", "Test", "Weather",
    ]  # fmt: skip
    assert components.find("archiver").__name__ == "ArchiverCsc"


def test_an_unknown_name_lists_those_there_are() -> None:
    with pytest.raises(ValueError, match="no CSC named 'Archivr'; known: Archiver, Camera"):
        components.find("Archivr")
