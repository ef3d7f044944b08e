"""The dashboard's quick-look picture of an image, from raw files written the way the
archiver writes them, decoded here by a small PNG reader: the size, the bias removed
per amplifier, which way is up, where a ComCam detector lands, and bad files named."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from cscs.camera.fits import write_raw_fits
from cscs.camera.focal_plane import CCD_PITCH, segment_keywords
from cscs.camera.geometry import (
    CCD_COLS,
    CCD_ROWS,
    SEGMENT_COLS,
    SEGMENT_ROWS,
    SEGMENTS,
    Camera,
    Detector,
    Segment,
    detector_keywords,
)
from cscs.dashboard.preview import FLAT_GREY, Preview, encode_png, render_preview
from tests.support.pixels import sums_of

Gray = npt.NDArray[np.uint8]
LATISS = Detector("R00", "S00")
SKY = 1000


def decode_png(data: bytes) -> Gray:
    """An 8-bit grayscale PNG of one IDAT, every chunk's CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: list[tuple[bytes, bytes]] = []
    position = 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        position += 12 + length
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, *fields = struct.unpack(">IIBBBBB", chunks[0][1])
    assert fields == [8, 0, 0, 0, 0]  # depth 8, grayscale, deflate, filters, no interlace
    rows = np.frombuffer(zlib.decompress(chunks[1][1]), dtype=np.uint8).reshape(height, width + 1)
    assert not rows[:, 0].any()  # filter type 0 on every row
    return rows[:, 1:]


def picture(preview: Preview) -> Gray:
    gray = decode_png(preview.png)
    assert gray.shape == (preview.height, preview.width)
    return gray


def write_raw(
    path: Path,
    detector: Detector,
    sky: npt.NDArray[np.int32] | int = SKY,
    bias: Sequence[int] | int = 5000,
    primary: dict[str, str] | None = None,
) -> Path:
    """A raw file as the archiver writes one (its primary cards when no header came,
    changed by ``primary``): ``sky`` on the detector, each segment offset by its bias
    (overscan included)."""
    truth = np.full((CCD_ROWS, CCD_COLS), sky, np.int32) if isinstance(sky, int) else sky
    levels = [bias] * len(SEGMENTS) if isinstance(bias, int) else bias
    extensions = []
    for segment, level in zip(SEGMENTS, levels, strict=True):
        raw = np.full((SEGMENT_ROWS, SEGMENT_COLS), level, np.int32)
        raw[segment.imaging_slice] += truth[segment.detector_slice()]
        cards = [(k, v, "") for k, v in segment_keywords(detector, segment).items()]
        extensions.append((cards, raw))
    keywords = {"OBSID": "CC_O_20261121_000001", **detector_keywords(detector)}
    keywords |= primary or {}
    write_raw_fits(
        path, [(k, v, "") for k, v in keywords.items()], extensions, datasums=sums_of(extensions)
    )
    return path


def segment_box(segment: Segment, height: int, binning: int = 8) -> tuple[slice, slice]:
    """The PNG pixels wholly inside a segment's imaging area (row 0 at the top)."""
    rows, cols = (
        range(*s.indices(n))
        for s, n in zip(segment.detector_slice(), (CCD_ROWS, CCD_COLS), strict=True)
    )
    first_row, last_row = -(-min(rows) // binning), (max(rows) + 1) // binning - 1
    first_col, last_col = -(-min(cols) // binning), (max(cols) + 1) // binning - 1
    return slice(height - 1 - last_row, height - first_row), slice(first_col, last_col + 1)


def ninth_centre(gray: Gray, row: int, col: int) -> int:
    height, width = gray.shape
    return int(gray[(2 * row + 1) * height // 6, (2 * col + 1) * width // 6])


def test_encode_png_writes_the_pixels_row_0_on_top() -> None:
    gray = (np.arange(15, dtype=np.uint8) * 17).reshape(3, 5)
    assert np.array_equal(decode_png(encode_png(gray)), gray)
    assert np.array_equal(decode_png(encode_png(gray[::-1])), gray[::-1])
    assert decode_png(encode_png(np.zeros((1, 1), np.uint8))).shape == (1, 1)
    for bad in (gray.astype(np.float32), gray[None], np.zeros((0, 4), np.uint8)):
        with pytest.raises(ValueError, match="2-D uint8"):
            encode_png(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("binning", [8, 3])
def test_latiss_is_its_one_detector_binned(tmp_path: Path, binning: int) -> None:
    ramp = np.broadcast_to(np.arange(CCD_COLS, dtype=np.int32), (CCD_ROWS, CCD_COLS))
    path = write_raw(tmp_path / "a.fits", LATISS, np.ascontiguousarray(ramp))
    preview = render_preview([path], Camera.LATISS, binning=binning)
    gray = picture(preview)
    assert gray.shape == (CCD_ROWS // binning, CCD_COLS // binning)  # remainders trimmed
    assert (preview.detectors, preview.problems) == (("R00_S00",), ())
    assert (np.diff(gray.astype(int), axis=1) >= 0).all()  # brighter to the right
    assert gray[:, 0].max() < 30
    assert gray[:, -1].min() > 250


def test_a_segment_with_a_high_bias_shows_no_stripe(tmp_path: Path) -> None:
    sky = np.full((CCD_ROWS, CCD_COLS), SKY, np.int32)
    dark, bright, biased = SEGMENTS[0], SEGMENTS[1], SEGMENTS[9]
    sky[dark.detector_slice()] = 0  # so that the stretch has a range to
    sky[bright.detector_slice()] = 3 * SKY  # place the sky in
    bias = [5000 + 300 * i for i in range(len(SEGMENTS))]
    bias[SEGMENTS.index(biased)] = 40000
    path = write_raw(tmp_path / "a.fits", LATISS, sky, bias)
    gray = picture(render_preview([path], Camera.LATISS))
    greys = np.concatenate(
        [gray[segment_box(s, gray.shape[0])].ravel() for s in SEGMENTS if s not in (dark, bright)]
    )
    assert greys.max() - greys.min() <= 1
    assert 50 < greys.min() < 220  # the sky is grey, neither clipped nor stretched away
    assert (gray[segment_box(dark, gray.shape[0])] == 0).all()
    assert (gray[segment_box(bright, gray.shape[0])] == 255).all()


def test_a_spot_near_the_top_left_of_the_ccd_is_near_the_top_left_of_the_picture(
    tmp_path: Path,
) -> None:
    sky = np.full((CCD_ROWS, CCD_COLS), SKY, np.int32)
    sky[3880:3896, 96:112] = 50 * SKY  # detector rows 3881-3896 of 4000: near the top
    gray = picture(render_preview([write_raw(tmp_path / "a.fits", LATISS, sky)], Camera.LATISS))
    rows, cols = np.nonzero(gray)  # the sky is at the low quantile: black
    top = CCD_ROWS // 8 - 1
    assert set(rows) == {top - 3895 // 8, top - 3880 // 8}  # 13 and 14 of 500
    assert set(cols) == {96 // 8, 111 // 8}
    # 4 pixels in 254 500, under the high quantile: the maximum sets the top
    assert (gray[13:15, 12:14] == 255).all()


def test_comcam_detectors_land_where_they_sit_in_the_raft(tmp_path: Path) -> None:
    top_left = write_raw(tmp_path / "s00.fits", Detector("R22", "S00"), 5 * SKY)
    sky = np.full((CCD_ROWS, CCD_COLS), SKY, np.int32)
    sky[SEGMENTS[0].detector_slice()] = 0
    bottom_middle = write_raw(tmp_path / "s21.fits", Detector("R22", "S21"), sky)
    preview = render_preview([bottom_middle, top_left], Camera.COMCAM)
    gray = picture(preview)
    # three detectors a side, on the raft's pitch (gaps between them)
    side = round(2 * CCD_PITCH / 8)
    assert gray.shape == (side + CCD_ROWS // 8, side + CCD_COLS // 8)
    assert preview.detectors == ("R22_S00", "R22_S21")
    centres = {(r, c): ninth_centre(gray, r, c) for r in range(3) for c in range(3)}
    assert centres.pop((0, 0)) == 255
    assert 50 < centres.pop((2, 1)) < 220
    assert set(centres.values()) == {0}  # the detectors not given, black
    pitch, height = round(CCD_PITCH / 8), gray.shape[0]
    assert not gray[:, CCD_COLS // 8 : pitch].any()  # between the columns of detectors
    assert not gray[height - pitch : height - CCD_ROWS // 8].any()  # the rows of them


def test_bad_files_are_named_and_the_rest_drawn(tmp_path: Path) -> None:
    good = write_raw(tmp_path / "good_R22_S11.fits", Detector("R22", "S11"))
    whole = write_raw(tmp_path / "whole.fits", Detector("R22", "S00")).read_bytes()
    truncated = tmp_path / "truncated_R22_S00.fits"
    truncated.write_bytes(whole[: len(whole) // 2 + 1000])
    cut_in_the_last_segment = tmp_path / "cut_R22_S00.fits"
    cut_in_the_last_segment.write_bytes(whole[:-100_000])
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file\n")
    latiss = write_raw(tmp_path / "latiss.fits", LATISS)
    short = tmp_path / "short_R22_S01.fits"
    primary = [(k, v, "") for k, v in detector_keywords(Detector("R22", "S01")).items()]
    few = [
        ([(k, v, "") for k, v in s.keywords().items()], np.zeros((8, 8), np.int32))
        for s in SEGMENTS[:3]
    ]
    write_raw_fits(short, primary, few, datasums=sums_of(few))
    again = write_raw(tmp_path / "again_R22_S11.fits", Detector("R22", "S11"))
    nameless = write_raw(tmp_path / "x.fits", Detector("R22", "S02"), primary={"RAFTBAY": "R9"})
    missing = tmp_path / "missing.fits"
    bad = [truncated, cut_in_the_last_segment, text, latiss, short, again, nameless, missing]
    preview = render_preview([good, *bad], Camera.COMCAM)
    assert preview.detectors == ("R22_S11",)
    assert len(preview.problems) == len(bad)
    for path, problem in zip(bad, preview.problems, strict=True):
        assert problem.startswith(f"{path.name} could not be drawn: "), problem
    gray = picture(preview)
    assert ninth_centre(gray, 1, 1) == FLAT_GREY
    assert ninth_centre(gray, 0, 0) == 0
    reasons = [problem.partition(": ")[2] for problem in preview.problems]
    assert reasons[0] == "9 HDUs where a raw file has 17."
    assert reasons[1].startswith("not a whole FITS file (FITSIO status = 107")
    assert reasons[2].startswith("not a whole FITS file")
    assert reasons[3] == "LSSTComCam has no detector R00_S00."
    assert reasons[4] == "4 HDUs where a raw file has 17."
    assert reasons[5] == "R22_S11 is drawn already, from good_R22_S11.fits."
    assert reasons[6] == "not a detector name (RXY_SXY): 'R9_S02'."
    assert reasons[7].startswith("it could not be opened")


def test_no_drawable_file_still_gives_the_camera_in_black(tmp_path: Path) -> None:
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file\n")
    preview = render_preview([text], Camera.LATISS)
    assert (preview.detectors, len(preview.problems)) == ((), 1)
    gray = picture(preview)
    assert gray.shape == (CCD_ROWS // 8, CCD_COLS // 8)
    assert not gray.any()
    assert picture(render_preview([], Camera.COMCAM)).shape == (1556, 1565)


def test_a_flat_image_is_drawn_mid_grey(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "flat.fits", LATISS, SKY, [5000 + 100 * i for i in range(16)])
    gray = picture(render_preview([path], Camera.LATISS))
    assert (gray == FLAT_GREY).all()
