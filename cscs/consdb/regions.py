"""``s_region``: where an exposure and each of its detectors fall on the sky, in STC-S
(``Polygon ICRS ra dec …``, degrees), from the celestial WCS each file carries.

A detector's region is its four pixel corners through its own WCS
(:class:`cscs.camera.sky.TanWcs`, the one that wrote the keywords). The exposure's is
the convex hull of every detector's corners: our detectors share the projection centre
and ``CD`` (they are parallel), so the hull is taken in the tangent plane and mapped to
the sky once. For the cross-shaped LSSTCam focal plane that hull also covers the
missing corner rafts; said in docs/consdb.md. As the observatory does, only a science
image has one, and only a WCS that is whole: a value missing means no region, never a
guessed one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cscs.camera.geometry import CCD_COLS, CCD_ROWS
from cscs.camera.sky import TanWcs

__all__ = ["detector_region", "exposure_region"]

_CORNERS = (
    (np.array([0.5, CCD_COLS + 0.5, CCD_COLS + 0.5, 0.5])),
    (np.array([0.5, 0.5, CCD_ROWS + 0.5, CCD_ROWS + 0.5])),
)  # pixel edges, 1-based: counter-clockwise in pixels
_NUMBERS = ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")
_SAME = 1e-9  # deg: projection centres and CD matrices that are one


def _wcs(header: Mapping[str, Any]) -> TanWcs | None:
    if header.get("CTYPE1") != "RA---TAN" or header.get("CTYPE2") != "DEC--TAN":
        return None
    values = [header.get(key) for key in _NUMBERS]
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        return None
    ra, dec, x, y, a, b, c, d = (float(v) for v in values)  # type: ignore[arg-type]
    if abs(dec) > 90.0 or a * d - b * c == 0.0:
        return None
    return TanWcs((ra, dec), (x, y), ((a, b), (c, d)))


def detector_region(header: Mapping[str, Any]) -> str | None:
    """The detector's footprint from its header's WCS, or None without a whole one."""
    wcs = _wcs(header)
    if wcs is None:
        return None
    ra, dec = wcs.pixel_to_sky(*_CORNERS)
    return _polygon(list(zip(ra.tolist(), dec.tolist(), strict=True)))


def exposure_region(headers: Sequence[Mapping[str, Any]]) -> str | None:
    """The hull of the detectors' footprints; None unless every file has a whole WCS
    about the same centre with the same ``CD``."""
    wcs = [_wcs(header) for header in headers]
    if not wcs or any(w is None for w in wcs):
        return None
    first = wcs[0]
    assert first is not None
    for other in wcs[1:]:
        assert other is not None
        if not _same(first, other):
            return None
    points: list[tuple[float, float]] = []
    for w in wcs:
        assert w is not None
        (a, b), (c, d) = w.cd
        dx, dy = _CORNERS[0] - w.crpix[0], _CORNERS[1] - w.crpix[1]
        points += zip((a * dx + b * dy).tolist(), (c * dx + d * dy).tolist(), strict=True)
    hull = _hull(points)
    plane = TanWcs(first.crval, (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)))
    ra, dec = plane.pixel_to_sky(np.array([p[0] for p in hull]), np.array([p[1] for p in hull]))
    return _polygon(list(zip(ra.tolist(), dec.tolist(), strict=True)))


def _same(one: TanWcs, other: TanWcs) -> bool:
    mine = (*one.crval, *one.cd[0], *one.cd[1])
    theirs = (*other.crval, *other.cd[0], *other.cd[1])
    return all(abs(p - q) <= _SAME for p, q in zip(mine, theirs, strict=True))


def _hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The convex hull, counter-clockwise (Andrew's monotone chain); points along an edge
    (the edges of a raft's outer CCDs) are not vertices, rounding errors aside."""
    ordered = sorted(set(points))
    if len(ordered) < 3:
        return ordered
    span = max(
        ordered[-1][0] - ordered[0][0], max(p[1] for p in ordered) - min(p[1] for p in ordered)
    )
    straight = 1e-9 * span * span  # a turn this small is a straight line

    def turn(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for chain, sequence in ((lower, ordered), (upper, list(reversed(ordered)))):
        for point in sequence:
            while len(chain) >= 2 and turn(chain[-2], chain[-1], point) <= straight:
                chain.pop()
            chain.append(point)
    return lower[:-1] + upper[:-1]


def _polygon(points: list[tuple[float, float]]) -> str:
    return "Polygon ICRS " + " ".join(f"{ra:.6f} {dec:.6f}" for ra, dec in points)
