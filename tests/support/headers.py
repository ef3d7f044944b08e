"""Header documents made by hand with the header service's own code, for tests that
deliver a header themselves (late, forged, for one sensor) instead of running a header
service. Test-only: it reaches into the header service's modules."""

from __future__ import annotations

from cscs.camera.events import EndOfImageTelemetry, StartIntegration
from cscs.camera.geometry import Camera
from cscs.header_service.collect import Missing, Value
from cscs.header_service.derived import derived_keywords
from cscs.header_service.detectors import detector_entries, mid_exposure_pointing
from cscs.header_service.document import RenderedHeader, render
from sim.daq.hardware import focal_plane_hardware

__all__ = ["rendered_header"]


def rendered_header(
    camera: Camera,
    start: StartIntegration,
    end: EndOfImageTelemetry,
    sensors: list[str],
    *,
    telescope: str = "",
) -> RenderedHeader:
    """A complete header document, made with the header service's own code, for tests
    that deliver a header by hand: pointing at a circumpolar field (so every pointing
    keyword exists at any time), the simulator's CCDs, a reason. ``telescope``: another
    ``TELESCOP`` (a forgery, say)."""
    if "reason" not in start.additionalKeys.split(":"):
        start = start.model_copy(update={"additionalKeys": "reason", "additionalValues": "test"})
    collected: dict[str, Value | Missing] = {
        "RA": Value(10.0, "deg"), "DEC": Value(-85.0, "deg"), "ROTPA": Value(0.0, "deg"),
    }  # fmt: skip
    primary = derived_keywords(camera, start, end, collected) + list(collected.items())
    if telescope:
        primary = [
            (k, Value(telescope, "", "telescope") if k == "TELESCOP" else v) for k, v in primary
        ]
    hardware = focal_plane_hardware(camera).by_detector()
    pointing = mid_exposure_pointing(collected)
    detectors = {
        name: detector_entries(camera, name, hardware, pointing, f"Camera:{camera.value}")
        for name in sensors
    }
    return render(start.imageName, f"HeaderService:{camera.value}", "test", primary, detectors)
