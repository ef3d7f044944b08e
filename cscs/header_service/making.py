"""An exposure's header document from its collection: the computed keywords, the
collected ones, each detector's own, rendered. One function, used by the live service
and by the rebuild from the EFD, so that both make the same header from the same
values (only ``HDRSRC`` says which made it). Pure (no I/O).
"""

from __future__ import annotations

from collections.abc import Mapping

from cscs.camera.events import CcdHardware
from cscs.camera.geometry import Camera
from cscs.header_service.collect import Exposure
from cscs.header_service.derived import derived_keywords
from cscs.header_service.detectors import detector_entries, mid_exposure_pointing
from cscs.header_service.document import RenderedHeader, render

__all__ = ["make_header"]


def make_header(
    camera: Camera,
    exposure: Exposure,
    hardware: Mapping[str, CcdHardware] | None,
    *,
    camera_source: str,
    generator: str,
    version: str,
    origin: str,
) -> RenderedHeader:
    """The document of ``exposure``: ``hardware`` is which CCD is in which slot (None:
    not announced), ``camera_source`` the camera as a reason names it, ``origin`` the
    ``HDRSRC`` (``live`` or ``EFD``)."""
    start = exposure.start
    primary = derived_keywords(camera, start, exposure.end, exposure.values, origin)
    primary += exposure.ordered()
    readout = exposure.readout
    sensors = (
        readout.sensor_names
        if readout and readout.sensor_names
        else [d.name for d in camera.detectors]
    )
    pointing = mid_exposure_pointing(exposure.values)
    detectors = {
        name: detector_entries(camera, name, hardware, pointing, camera_source) for name in sensors
    }
    return render(exposure.image, generator, version, primary, detectors)
