"""Archived raw files against the real raws' conventions (docs/raw-format.md).

Each camera takes one image through the whole chain (telescope, weather, camera, header
service, archiver, in one process); the archived file's keywords are compared with the
keyword names of a real raw of that camera (``tests/fixtures/raw_keywords``, names only,
listed by us from the public samples), and every difference must be one that
``docs/raw-format.md`` explains. Then the values the pipelines' metadata translators key
on, and the pixel frames of every extension, against the real files' numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.wcs import WCS

from cscs.camera.fits import write_raw_fits
from cscs.camera.focal_plane import segment_keywords
from cscs.camera.geometry import (
    CCD_COLS,
    CCD_ROWS,
    SEGMENT_COLS,
    SEGMENT_ROWS,
    SEGMENTS,
    Camera,
    Detector,
)
from cscs.core.testing import MemoryBroker
from sim.testkit import observatory
from tests.support.pixels import sums_of

FIXTURES = Path(__file__).parent / "fixtures" / "raw_keywords"
DOC = Path(__file__).parents[1] / "docs" / "raw-format.md"
CAMERAS = {1: ("latiss", "LATISS", "R00_S00"), 2: ("comcam", "ComCam", "R22_S00"),
           3: ("lsstcam", "LSSTCam", "R22_S11")}  # fmt: skip
#: How a file is stored rather than what it says: the real raws are tile-compressed
#: (BINTABLE, Z*), ours are plain images; both carry their own structure and checksums.
STORAGE = re.compile(
    r"SIMPLE|EXTEND|XTENSION|BITPIX|NAXIS\d?|PCOUNT|GCOUNT|TFIELDS|TTYPE\d|TFORM\d|Z.*"
    r"|BSCALE|BZERO|CHECKSUM|DATASUM"
)
OBJECT = {"expTime": 0.2, "shutter": True, "imageType": "OBJECT", "keyValueMap": "reason:test"}


def explained() -> dict[tuple[str, str, str], str]:
    """(keyword, camera, side) → why, from the tables of docs/raw-format.md's section
    "Differences from the real raws". Side: ``real only`` or ``ours only``."""
    text = DOC.read_text().split("## Differences from the real raws", 1)[1].split("\n## ", 1)[0]
    reasons: dict[tuple[str, str, str], str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        keywords, cameras, side, why = cells
        names = ["LATISS", "ComCam", "LSSTCam"] if cameras == "all" else cameras.split(", ")
        for keyword in re.findall(r"`([^`]+)`", keywords):
            for camera in names:
                reasons[(keyword, camera, side)] = why
    return reasons


def differences(camera: str, real: set[str], ours: set[str]) -> list[tuple[str, str, str]]:
    real, ours = (
        {k for k in real if not STORAGE.fullmatch(k)},
        {k for k in ours if not STORAGE.fullmatch(k)},
    )
    return sorted(
        [(k, camera, "real only") for k in real - ours]
        + [(k, camera, "ours only") for k in ours - real]
    )


async def archived_file(tmp_path: Path, index: int, sensor: str) -> Path:
    """One OBJECT image of camera ``index`` (only ``sensor`` read out), archived."""
    async with (
        observatory(
            MemoryBroker(), f"raw{index}", tmp_path, index=index, camera={"sensors": [sensor]}
        ) as obs,  # fmt: skip
        obs.archiver.remote.stream("imageArchived") as archived,
    ):
        await obs.point(40.0, -70.0, 20.0)
        await obs.camera.remote.command("takeImages", {"numImages": 1, **OBJECT}, timeout=60)
        event = (await archived.next(60)).data
    assert event["headerComplete"], event
    return Path(event["path"]) if "path" in event else next(obs.archive.rglob("*.fits"))


@pytest.mark.parametrize("index", [1, 2, 3], ids=["LATISS", "ComCam", "LSSTCam"])
async def test_keywords_are_the_real_raws_or_explained(tmp_path: Path, index: int) -> None:
    fixture, camera, sensor = CAMERAS[index]
    real = yaml.safe_load((FIXTURES / f"{fixture}.yaml").read_text())
    path = await archived_file(tmp_path, index, sensor)
    with fits.open(path) as hdus:
        primary = set(hdus[0].header)
        extensions = [set(hdu.header) for hdu in hdus[1:]]
        header = hdus[0].header
    assert all(e == extensions[0] for e in extensions)  # every amplifier alike
    found = differences(camera, set(real["primary"]), primary)
    found += [(f"{k} (extension)", c, s) for k, c, s in
              differences(camera, set(real["extension"]), extensions[0])]  # fmt: skip
    reasons = explained()
    unexplained = [
        d for d in found if (d[0].removesuffix(" (extension)"), d[1], d[2]) not in reasons
    ]
    assert not unexplained, f"not explained in docs/raw-format.md: {unexplained}"
    # What the metadata translators key on (docs/raw-format.md, "Checked against").
    assert header["INSTRUME"] == {1: "LATISS", 2: "ComCam", 3: "lsstCam"}[index]
    assert header["TELESCOP"] == ("LSST AuxTelescope" if index == 1 else "Simonyi Survey Telescope")
    assert (header["TIMESYS"], header["RADESYS"]) == ("TAI", "ICRS")
    assert header["DATE"] > header["DATE-END"] > header["DATE-OBS"]  # DATE: file creation
    assert re.fullmatch(r"ITL-3800C-\d{3}", header["LSST_NUM"])
    assert header["FILENAME"] == path.name
    assert header["PRESSURE"] > 10000  # Pa, as the translators read it
    if index == 1:
        assert (header["FILTER"], header["GRATING"]) == ("SDSSr_65mm", "empty_1")
    else:
        assert re.fullmatch(r"[ugrizy]_\d+", header["FILTER"])
        assert header["FILTBAND"] == header["FILTER"][0]


def test_the_differences_listed_are_still_differences() -> None:
    """A row of the table that no longer applies would mislead a reader: each keyword
    it names really is on one side only, for each camera it names."""
    for (keyword, camera, side), _ in explained().items():
        fixture = {"LATISS": "latiss", "ComCam": "comcam", "LSSTCam": "lsstcam"}[camera]
        real = yaml.safe_load((FIXTURES / f"{fixture}.yaml").read_text())
        in_real = keyword in real["primary"] or keyword in real["extension"]
        assert in_real == (side == "real only"), (keyword, camera, side)


#: Every 7th row and column of each segment, and its last: a 49th of the pixels, every
#: segment's corners among them, so a misplaced, flipped or shifted segment still shows.
STRIDE = 7


def placed_pixels(
    path: Path, frame: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Imaging pixels of a raw file (a sample: :data:`STRIDE`) placed by the extensions'
    ``frame`` WCS alone (``C`` CCD, ``R`` raft, ``F`` focal plane): their X and Y in that
    frame, and their values."""
    xs, ys, values = [], [], []
    with fits.open(path) as hdus:
        for hdu in hdus[1:]:
            x1, x2, y1, y2 = map(int, re.findall(r"\d+", hdu.header["DATASEC"]))
            rows = np.unique(np.r_[y1 : y2 + 1 : STRIDE, y2])
            cols = np.unique(np.r_[x1 : x2 + 1 : STRIDE, x2])
            j, i = np.meshgrid(rows, cols, indexing="ij")
            world = WCS(hdu.header, key=frame).wcs_pix2world(i.ravel(), j.ravel(), 1)
            xs.append(np.rint(world[0]).astype(int))
            ys.append(np.rint(world[1]).astype(int))
            values.append(hdu.data[np.ix_(rows - 1, cols - 1)].ravel())
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(values)


def test_a_detector_assembles_from_its_extensions_keywords_alone(tmp_path: Path) -> None:
    """Segments cut from a known detector image (as the camera simulator cuts them),
    written as a raw file, come back as that image turned into the camera's CCD frame."""
    detector = Detector("R22", "S01")
    truth = np.arange(CCD_ROWS * CCD_COLS, dtype=np.int32).reshape(CCD_ROWS, CCD_COLS) % 100_003
    segments = []
    for segment in SEGMENTS:
        raw = np.zeros((SEGMENT_ROWS, SEGMENT_COLS), dtype=np.int32)
        raw[segment.imaging_slice] = truth[segment.detector_slice()]
        cards = [(k, v, "") for k, v in segment_keywords(detector, segment).items()]
        segments.append((cards, raw))
    path = tmp_path / "raw.fits"
    write_raw_fits(path, [("OBSID", "x", "")], segments, datasums=sums_of(segments))
    xs, ys, values = placed_pixels(path, "C")
    # CCD_X runs down the detector's rows, CCD_Y along its columns; the frame starts at 1.
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (1, 1, CCD_ROWS, CCD_COLS)
    assert len(np.unique(xs * (CCD_COLS + 1) + ys)) == len(xs)  # no two pixels in one place
    assert np.array_equal(values, truth[::-1, :].T[ys - 1, xs - 1])


def test_a_raft_and_the_focal_plane_assemble_from_the_keywords_alone() -> None:
    """Every segment of the 9 CCDs of a raft, placed by its RAFT and FOCAL_PLANE frames:
    each CCD fills one 4000 x 4072 block, none overlap, gaps as on the real raft (CCDs on
    a 4225-pixel pitch), and the focal plane is the raft moved to its cell."""
    blocks = {}
    for detector in Camera.LSSTCAM.detectors[:9]:
        corners = []
        for segment in SEGMENTS:
            header = fits.Header(list(segment_keywords(detector, segment).items()))
            x1, x2, y1, y2 = map(int, re.findall(r"\d+", segment.datasec))
            for frame in ("R", "F"):
                world = WCS(header, key=frame).wcs_pix2world([x1, x2], [y1, y2], 1)
                corners.append((frame, *(np.rint(w).astype(int) for w in world)))
        for frame in ("R", "F"):
            xs = np.concatenate([c[1] for c in corners if c[0] == frame])
            ys = np.concatenate([c[2] for c in corners if c[0] == frame])
            blocks[(detector.name, frame)] = (xs.min(), xs.max(), ys.min(), ys.max())
    raft = Camera.LSSTCAM.detectors[0].raft
    i, j = int(raft[1]), int(raft[2])
    for detector in Camera.LSSTCAM.detectors[:9]:
        x0, x1, y0, y1 = blocks[(detector.name, "R")]
        assert (x1 - x0 + 1, y1 - y0 + 1) == (CCD_ROWS, CCD_COLS)
        sx, sy = int(detector.slot[1]), int(detector.slot[2])
        centre = (6350 + (sx - 1) * 4225, 6350 + (sy - 1) * 4225)
        assert ((x0 + x1) / 2, (y0 + y1) / 2) == (centre[0] + 0.5, centre[1] + 0.5)
        fx0, _, fy0, _ = blocks[(detector.name, "F")]
        assert (fx0 - x0, fy0 - y0) == (12700 * i, 12700 * j)


def test_segment10_frames_are_the_real_raws_numbers() -> None:
    """The numbers of Segment10 in the real ComCam R22_S00, LSSTCam R01_S01 and LATISS
    samples (lsst/obs_lsst tests/headers), which the camera's own tools wrote."""
    real = {
        ("R22", "S00"): {"CRVAL1A": 2001.0, "CRVAL2A": 513.0, "CRVAL1C": 4001.0,
                         "CRVAL2C": 513.0, "CRVAL1R": 4126.0, "CRVAL2R": 602.0,
                         "CRVAL1F": 29526.0, "CRVAL2F": 26002.0, "CRVAL1E": 26002.0,
                         "CRVAL2E": 29526.0, "CRVAL1B": 513.0, "CRVAL2B": 4001.0,
                         "CRVAL1Q": 602.0, "CRVAL2Q": 4126.0},
        ("R01", "S01"): {"CRVAL1R": 4126.0, "CRVAL2R": 4827.0, "CRVAL1F": 4126.0,
                         "CRVAL2F": 17527.0, "CRVAL1Q": 4827.0, "CRVAL2Q": 4126.0},
    }  # fmt: skip
    for (raft, slot), expected in real.items():
        keywords = segment_keywords(Detector(raft, slot), SEGMENTS[0])
        assert {k: keywords[k] for k in expected} == expected
        assert [keywords[f"PC{p}A"] for p in ("1_1", "1_2", "2_1", "2_2")] == [0, -1, -1, 0]
        assert [keywords[f"PC{p}B"] for p in ("1_1", "1_2", "2_1", "2_2")] == [-1, 0, 0, -1]
