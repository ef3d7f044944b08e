"""Where a detector looks on the sky: a gnomonic (TAN) WCS per detector, from the
pointing, the rotator angle, the detector's place in the focal plane and the pixel scale.

One function makes it (:func:`detector_wcs`) and both sides use it: the header service
writes its keywords into each detector's primary header, and the camera simulator uses
its inverse to put the catalog's stars on the pixels. The tests do not trust this code
to check itself: they read the archived file's keywords with astropy's own WCS and
find the stars in the pixels.

Conventions (``docs/raw-format.md``): ``ROTPA`` is the position angle, north through
east, of each detector's +y axis (all detectors of a camera are parallel); at 0 north is
+y and east is -x, the sky as seen on the sky. No optical distortion is modelled, so
the detectors far from the axis are as good as the central one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cscs.camera.focal_plane import boresight_on_detector
from cscs.camera.geometry import Camera, Detector

__all__ = ["Pointing", "TanWcs", "detector_wcs", "wcs_keyword_names", "within_radius"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Pointing:
    """The optical axis on the sky and the rotator: RA/Dec (ICRS) and ROTPA, degrees."""

    ra: float
    dec: float
    rotation: float


@dataclass(frozen=True)
class TanWcs:
    """``(x, y)`` 1-based pixels → (ξ, η) = CD · (pixel - CRPIX), degrees → RA/Dec by
    the gnomonic projection about (CRVAL1, CRVAL2)."""

    crval: tuple[float, float]  # deg
    crpix: tuple[float, float]  # 1-based
    cd: tuple[tuple[float, float], tuple[float, float]]  # deg / pixel

    def keywords(self) -> dict[str, Any]:
        """The primary-header keywords, named and ordered as the real raws have them."""
        (a, b), (c, d) = self.cd
        return {
            "WCSAXES": 2,
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CUNIT1": "deg",
            "CUNIT2": "deg",
            "CRVAL1": self.crval[0],
            "CRVAL2": self.crval[1],
            "CRPIX1": self.crpix[0],
            "CRPIX2": self.crpix[1],
            "CD1_1": a,
            "CD1_2": b,
            "CD2_1": c,
            "CD2_2": d,
            "EQUINOX": 2000.0,
        }

    def sky_to_pixel(self, ra: Array, dec: Array) -> tuple[Array, Array]:
        """1-based pixel coordinates of RA/Dec (degrees); NaN for the far hemisphere."""
        ra0, dec0 = np.radians(self.crval[0]), np.radians(self.crval[1])
        ra_, dec_ = np.radians(ra), np.radians(dec)
        cos_c = np.sin(dec0) * np.sin(dec_) + np.cos(dec0) * np.cos(dec_) * np.cos(ra_ - ra0)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = np.cos(dec_) * np.sin(ra_ - ra0) / cos_c
            eta = (
                np.cos(dec0) * np.sin(dec_) - np.sin(dec0) * np.cos(dec_) * np.cos(ra_ - ra0)
            ) / cos_c
        xi = np.where(cos_c > 0, np.degrees(xi), np.nan)
        eta = np.where(cos_c > 0, np.degrees(eta), np.nan)
        (a, b), (c, d) = self.cd
        determinant = a * d - b * c
        dx = (d * xi - b * eta) / determinant
        dy = (-c * xi + a * eta) / determinant
        return dx + self.crpix[0], dy + self.crpix[1]

    def pixel_to_sky(self, x: Array, y: Array) -> tuple[Array, Array]:
        """RA/Dec (degrees) of 1-based pixel coordinates."""
        (a, b), (c, d) = self.cd
        dx, dy = np.asarray(x) - self.crpix[0], np.asarray(y) - self.crpix[1]
        xi, eta = np.radians(a * dx + b * dy), np.radians(c * dx + d * dy)
        ra0, dec0 = np.radians(self.crval[0]), np.radians(self.crval[1])
        denominator = np.cos(dec0) - eta * np.sin(dec0)
        ra = ra0 + np.arctan2(xi, denominator)
        dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denominator))
        return np.degrees(ra) % 360.0, np.degrees(dec)


def detector_wcs(camera: Camera, detector: Detector, pointing: Pointing) -> TanWcs:
    """The WCS of ``detector`` when ``camera`` points at ``pointing``."""
    scale = camera.pixel_scale / 3600.0
    theta = math.radians(pointing.rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    # +y on the sky at position angle θ: (ξ east, η north) = (sin θ, cos θ); +x at θ - 90°.
    cd = ((-scale * cos, scale * sin), (scale * sin, scale * cos))
    return TanWcs((pointing.ra % 360.0, pointing.dec), boresight_on_detector(camera, detector), cd)


def wcs_keyword_names() -> tuple[str, ...]:
    """The celestial WCS keywords of a detector's primary header, in order."""
    return tuple(TanWcs((0.0, 0.0), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0))).keywords())


def within_radius(
    ra: Array, dec: Array, centre_ra: float, centre_dec: float, radius: float
) -> npt.NDArray[np.bool_]:
    """Which of the positions (degrees) lie within ``radius`` degrees of the centre:
    the haversine, exact to well below a milliarcsecond at any separation, across RA
    0/360 and over the poles alike."""
    dec0, dec1 = math.radians(centre_dec), np.radians(dec)
    half_chord = (
        np.sin((dec1 - dec0) / 2) ** 2
        + math.cos(dec0) * np.cos(dec1) * np.sin(np.radians(ra - centre_ra) / 2) ** 2
    )
    inside: npt.NDArray[np.bool_] = half_chord <= math.sin(math.radians(radius) / 2) ** 2
    return inside
