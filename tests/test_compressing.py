"""Tile-compressed raw files written by worker processes: whole, verifiable by astropy and
fitsverify, memory bounded by the writes under way, and no file lost to a worker killed."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from cscs.camera.compressing import CompressionWorkers
from cscs.camera.fits import Card
from cscs.camera.geometry import SEGMENTS
from cscs.camera.verify import verify_raw_file
from tests.support.pixels import sums_of

RNG = np.random.default_rng(11)
# a bias-like sensor: a level and read noise (what RICE_1 compresses about 4:1)
PIXELS = [(20_000 + RNG.normal(0, 6, (2048, 576))).astype(np.int32) for _ in SEGMENTS]
EXTENSIONS: list[tuple[list[Card], np.ndarray]] = [
    ([(k, v, "") for k, v in s.keywords().items()], p)
    for s, p in zip(SEGMENTS, PIXELS, strict=True)
]
# Compression workers are processes (and fitsverify one more): the system tier.
pytestmark = pytest.mark.broker

PRIMARY: list[Card] = [("OBSID", "CC_O_20261121_000001", "image name"), ("EXPTIME", 0.0, "s")]


@pytest.fixture(scope="module")
def workers() -> Iterator[CompressionWorkers]:
    pool = CompressionWorkers(2)
    yield pool
    pool.close()


def write(workers: CompressionWorkers, path: Path) -> tuple[Path, int, str]:
    written = workers.write(path, PRIMARY, EXTENSIONS, datasums=sums_of(EXTENSIONS),
                            compression="RICE_1", checksum="adler32")  # fmt: skip
    return written.path, written.byte_size, written.checksum


def test_a_file_compressed_in_a_worker_is_whole_and_verifies(
    workers: CompressionWorkers, tmp_path: Path
) -> None:
    path, size, checksum = write(workers, tmp_path / "a.fits")
    data = path.read_bytes()
    assert (size, checksum) == (len(data), f"{zlib.adler32(data):08x}")
    assert size < sum(p.nbytes for p in PIXELS) / 2  # compressed, not merely copied
    assert verify_raw_file(path, size, checksum, "adler32") == []
    with fits.open(path, checksum=True) as hdus:  # a checksum mismatch warns: an error here
        assert hdus[0].header["OBSID"] == "CC_O_20261121_000001"
        assert [h.header["EXTNAME"] for h in hdus[1:]] == [s.name for s in SEGMENTS]
        for hdu, pixels in zip(hdus[1:], PIXELS, strict=True):
            assert isinstance(hdu, fits.CompImageHDU)
            assert hdu.compression_type == "RICE_1"
            assert np.array_equal(hdu.data, pixels)
    assert list(tmp_path.iterdir()) == [path]  # no temporary left beside it


@pytest.mark.skipif(shutil.which("fitsverify") is None, reason="fitsverify is not installed")
def test_fitsverify_accepts_a_compressed_raw_file(
    workers: CompressionWorkers, tmp_path: Path
) -> None:
    """HEASARC's verifier (what a pipeline's data-quality check runs): no errors, no
    warnings, checksums included."""
    path, _, _ = write(workers, tmp_path / "a.fits")
    for hdu in range(1 + len(SEGMENTS)):  # fitsverify checks the sums that are there
        assert {"CHECKSUM", "DATASUM"} <= set(fitsio.read_header(str(path), ext=hdu).keys())
    result = subprocess.run(["fitsverify", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "found 0 warning(s) and 0 error(s)" in result.stdout, result.stdout


def test_shared_memory_is_bounded_by_the_files_written_at_once(
    workers: CompressionWorkers, tmp_path: Path
) -> None:
    """Three writers, eight files: every file whole, and never more shared buffers than
    there were writers (or workers): the backlog's size does not grow memory."""
    with ThreadPoolExecutor(3) as writers:
        files = list(writers.map(lambda n: write(workers, tmp_path / f"{n}.fits"), range(8)))
    assert all(verify_raw_file(p, s, c, "adler32") == [] for p, s, c in files)
    assert workers.shared_buffers <= 3


def test_a_killed_worker_costs_no_file(tmp_path: Path) -> None:
    """The kernel's OOM killer takes the workers: the next file is written by new ones,
    whole, and the pool goes on."""
    others = set(multiprocessing.active_children())
    pool = CompressionWorkers(2)
    try:
        write(pool, tmp_path / "before.fits")
        started = set(multiprocessing.active_children()) - others
        assert started
        for process in started:
            assert process.pid is not None
            os.kill(process.pid, signal.SIGKILL)
        for process in started:
            process.join(10)
        path, size, checksum = write(pool, tmp_path / "after.fits")
        assert verify_raw_file(path, size, checksum, "adler32") == []
        path, size, checksum = write(pool, tmp_path / "later.fits")
        assert verify_raw_file(path, size, checksum, "adler32") == []
    finally:
        pool.close()
