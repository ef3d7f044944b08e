"""Camera geometry: the numbers the simulator, header service and archiver share."""

from __future__ import annotations

import numpy as np
import pytest

from cscs.camera.geometry import (
    CCD_COLS,
    CCD_ROWS,
    DETSIZE,
    SEGMENT_COLS,
    SEGMENT_NAMES,
    SEGMENT_ROWS,
    SEGMENTS,
    Camera,
    Detector,
    camera_for_index,
    detector_keywords,
)


def _section(text: str) -> tuple[int, int, int, int]:
    x, y = text.strip("[]").split(",")
    x1, x2 = map(int, x.split(":"))
    y1, y2 = map(int, y.split(":"))
    return x1, x2, y1, y2


def test_cameras_have_the_documented_detectors() -> None:
    assert [d.name for d in Camera.LATISS.detectors] == ["R00_S00"]
    assert [d.name for d in Camera.COMCAM.detectors] == [
        f"R22_S{x}{y}" for x in range(3) for y in range(3)
    ]
    lsst = Camera.LSSTCAM.detectors
    assert len(lsst) == 189 == len(set(lsst))
    rafts = {d.raft for d in lsst}
    assert len(rafts) == 21
    assert rafts.isdisjoint({"R00", "R04", "R40", "R44"})  # corners: guide/wavefront
    assert (Camera.LATISS.code, Camera.COMCAM.code, Camera.LSSTCAM.code) == ("AT", "CC", "MC")


def test_camera_index_and_detector_lookup_errors_name_the_cause() -> None:
    assert camera_for_index(2) is Camera.COMCAM
    with pytest.raises(ValueError, match="1 \\(LATISS\\), 2 \\(ComCam\\) or 3"):
        camera_for_index(7)
    with pytest.raises(ValueError, match="LSSTComCam has no detector R00_S00"):
        Camera.COMCAM.detector("R00_S00")
    for bad in ("R22S11", "R55_S00", "R22_S33", "X22_S11", ""):
        with pytest.raises(ValueError, match="not a detector name"):
            Detector.parse(bad)


def test_segment_order_and_raw_size() -> None:
    assert (
        tuple([f"Segment1{i}" for i in range(8)] + [f"Segment0{i}" for i in reversed(range(8))])
        == SEGMENT_NAMES
    )
    assert (SEGMENT_ROWS, SEGMENT_COLS) == (2048, 576)
    assert 16 * SEGMENT_ROWS * SEGMENT_COLS * 4 == 75_497_472  # ~75.5 MB per CCD
    assert DETSIZE == "[1:4072,1:4000]"


@pytest.mark.parametrize("segment", SEGMENTS, ids=SEGMENT_NAMES)
def test_datasec_maps_onto_detsec_through_dtv_dtm(segment: object) -> None:
    from cscs.camera.geometry import Segment

    assert isinstance(segment, Segment)
    keywords = segment.keywords()
    i1, i2, j1, j2 = _section(keywords["DATASEC"])
    assert (i2 - i1 + 1, j2 - j1 + 1) == (509, 2000)
    assert (i1, j1) == (4, 1)  # 3 prescan columns come first
    b1, b2, bj1, bj2 = _section(keywords["BIASSEC"])
    assert (b1, b2, bj1, bj2) == (513, 576, 1, 2000)  # the 64 serial-overscan columns
    x1, x2, y1, y2 = _section(keywords["DETSEC"])
    dtm1, dtm2 = keywords["DTM1_1"], keywords["DTM2_2"]
    dtv1, dtv2 = keywords["DTV1"], keywords["DTV2"]
    assert (x1, x2) == (dtm1 * i1 + dtv1, dtm1 * i2 + dtv1)
    assert (y1, y2) == (dtm2 * j1 + dtv2, dtm2 * j2 + dtv2)


def test_segments_tile_the_detector_exactly_once() -> None:
    """Assemble a detector from 16 raw segments with DTV/DTM alone: every imaging pixel
    is covered once, and the numpy slices used by the simulator agree with it."""
    cover = np.zeros((CCD_ROWS, CCD_COLS), dtype=np.int32)
    for number, segment in enumerate(SEGMENTS, start=1):
        kw = segment.keywords()
        i1, i2, j1, j2 = _section(kw["DATASEC"])
        i = np.arange(i1, i2 + 1)
        j = np.arange(j1, j2 + 1)
        x = (kw["DTM1_1"] * i + kw["DTV1"]).astype(int) - 1
        y = (kw["DTM2_2"] * j + kw["DTV2"]).astype(int) - 1
        cover[np.ix_(y, x)] += 1
        # The simulator's slice reads the same detector pixels in raw orientation.
        marker = np.zeros((CCD_ROWS, CCD_COLS), dtype=np.int32)
        marker[np.ix_(y, x)] = np.arange(x.size * y.size).reshape(y.size, x.size) + 1
        raw = marker[segment.detector_slice()]
        assert raw.shape == (2000, 509)
        assert np.array_equal(raw, np.arange(raw.size).reshape(raw.shape) + 1), number
    assert cover.min() == cover.max() == 1


def test_detector_keywords() -> None:
    assert detector_keywords(Detector.parse("R22_S11")) == {
        "RAFTBAY": "R22",
        "CCDSLOT": "S11",
    }
