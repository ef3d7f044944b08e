"""The interface document is generated from the code's declarations and never drifts."""

from __future__ import annotations

from pathlib import Path

from cscs import components
from cscs.core.interface_doc import render

DOC = Path(__file__).parents[1] / "docs" / "interface.md"


def test_interface_doc_is_current() -> None:
    """docs/interface.md is what `cscs interface-doc` would write from the schemas."""
    assert DOC.read_text() == render(cls.interface for cls in components.all_classes())


def test_every_component_is_registered() -> None:
    """`cscs run NAME` finds every CSC of the project and its simulators (entry points)."""
    assert components.names() == [
        "Archiver", "Camera", "HeaderService", "Telescope", "Test", "Weather",
    ]  # fmt: skip
