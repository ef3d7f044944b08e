"""The DAQ's integrity check is each segment's FITS DATASUM (ADR 0041): one bit flipped
in transit is found in the writer's own pass, before the file exists, on the archiver's
path and on a Dask worker's, and the sensor is read again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import structlog

from cscs.archiver import worker
from cscs.archiver.reader import DaqReads, ReadFailedError, open_daq_client
from cscs.archiver.worker import SensorJob, archive_sensor
from cscs.archiver.writer import ArchiveFiles
from cscs.camera.datasums import DataSumMismatchError
from cscs.camera.fits import WrittenFile, write_raw_fits
from cscs.camera.geometry import SEGMENT_NAMES, SEGMENTS, Camera
from cscs.camera.verify import verify_raw_file
from cscs.daq.client import DaqClient
from cscs.daq.errors import ChecksumMismatchError, DaqError
from cscs.daq.protocol import CHECKSUM
from cscs.daq.reader import SensorPixels
from sim.daq.faults import FaultKind, FaultRule
from sim.daq.pixels import ElectronicsModel, Scene, synthesize_sensor
from sim.daq.server import DaqServer
from sim.daq.store import DaqStore, SensorData
from tests.support.pixels import sums_of

IMAGE = "AT_O_20261121_000001"
SENSOR = "R00_S00"
LOG = structlog.get_logger()


@pytest_asyncio.fixture
async def server() -> AsyncIterator[DaqServer]:
    segments = synthesize_sensor(ElectronicsModel(), Scene("FLAT", 1.0, 1.0, seed=3),
                                 Camera.LATISS.detector(SENSOR))  # fmt: skip
    store = DaqStore(2 * 10**8)
    store.begin_image(IMAGE, [SENSOR], {})
    store.put_sensor(IMAGE, SENSOR, SensorData.from_segments(segments))
    store.end_image(IMAGE)
    async with DaqServer(store, ["tcp://127.0.0.1:*"]) as running:
        yield running


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_a_bit_flipped_in_transit_is_caught_before_the_file_exists(
    server: DaqServer, tmp_path: Path
) -> None:
    server.faults.add(FaultRule(kind=FaultKind.CORRUPT, segment=4, count=0))
    files = ArchiveFiles(tmp_path, Camera.LATISS)
    reads = DaqReads(LOG, pytest.fail, attempts=2, sleep=_no_wait)
    reads.daq = await open_daq_client(server.endpoints[0], 5.0, 1.0)
    written: list[WrittenFile] = []

    async def write(pixels: SensorPixels) -> WrittenFile:
        written.append(files.write(pixels, None))  # raises before any byte is written
        return written[-1]

    try:
        with pytest.raises(ReadFailedError, match=f"segment {SEGMENTS[4].name} is corrupt"):
            await reads.read(IMAGE, SENSOR, write)
        assert (written, files_under(tmp_path)) == ([], [])
        server.faults.clear()  # read again, whole this time: archived
        done = await reads.read(IMAGE, SENSOR, write)
    finally:
        await reads.daq.close()
    assert verify_raw_file(done.path, done.byte_size, done.checksum, "adler32") == []


@pytest_asyncio.fixture
async def worker_readers() -> AsyncIterator[None]:
    """The DAQ clients a worker keeps between tasks, closed after the test."""
    yield
    readers: dict[Any, Any] = getattr(worker, "_readers", {})
    for key, reader in list(readers.items()):
        await reader.close()
        del readers[key]


@pytest.mark.usefixtures("worker_readers")
@pytest.mark.parametrize("compression", ["", "RICE_1"])
async def test_a_dask_worker_finds_it_too_and_reads_the_sensor_again(
    server: DaqServer, tmp_path: Path, compression: str
) -> None:
    job = SensorJob(IMAGE, SENSOR, None, Camera.LATISS.value, str(tmp_path),
                    server.endpoints[0], 5.0, 1.0, 1, compression)  # fmt: skip
    server.faults.add(FaultRule(kind=FaultKind.CORRUPT, segment=9, count=0))
    outcome = await archive_sensor(job)
    assert outcome.written is None
    assert outcome.kind == "read"
    assert f"segment {SEGMENTS[9].name} is corrupt" in outcome.failure
    assert files_under(tmp_path) == []
    server.faults.clear()
    server.faults.add(FaultRule(kind=FaultKind.CORRUPT, segment=9, count=1))
    again = await archive_sensor(SensorJob(**{**job.__dict__, "read_attempts": 2}))
    assert again.written is not None
    assert again.written.temporary is not None
    assert files_under(tmp_path) == [again.written.temporary]


def test_the_raw_writer_requires_and_checks_the_sums(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    extensions: list[tuple[list[Any], Any]] = [
        ([], rng.integers(-(2**31), 2**31 - 1, (6, 5), np.int32)) for _ in range(3)
    ]
    sums = sums_of(extensions)
    for compression in ("", "RICE_1"):
        for wrong in range(3):
            bad = tuple(s ^ 1 if i == wrong else s for i, s in enumerate(sums))
            with pytest.raises(DataSumMismatchError) as caught:
                write_raw_fits(tmp_path / "a.fits", [], extensions, datasums=bad,
                               compression=compression)  # fmt: skip
            assert caught.value.segment == wrong
            assert files_under(tmp_path) == []


def test_pixels_verify_against_the_sums_they_came_with() -> None:
    segments = [np.full((4, 4), i, np.int32) for i in range(len(SEGMENTS))]
    good = SensorPixels.trusted(IMAGE, SENSOR, segments)
    good.verify()
    flipped = [s.copy() for s in segments]
    flipped[2][1, 1] ^= 1 << 30
    with pytest.raises(ChecksumMismatchError, match=f"segment {SEGMENT_NAMES[2]} is corrupt"):
        SensorPixels(IMAGE, SENSOR, tuple(flipped), good.datasums).verify()


GOOD = {"segments": list(SEGMENT_NAMES), "dtype": "<i4", "shape": [2048, 576],
        "checksum": CHECKSUM, "checksums": [0] * 16}  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [{"checksum": "xxh3_64"}, {"checksums": [0] * 15}, {"checksums": [0] * 17},
     {"checksums": ["0"] * 16}, {"checksums": [True] * 16}, {"checksums": [0.0] * 16},
     {"checksums": [-1] * 16}, {"checksums": [2**32] * 16}, {"checksums": None}],
)  # fmt: skip
def test_a_begin_without_16_sums_of_32_bits_is_a_protocol_error(change: dict[str, Any]) -> None:
    DaqClient._check_layout({**GOOD, "checksums": [2**32 - 1] * 16}, IMAGE, SENSOR)  # noqa: SLF001
    with pytest.raises(DaqError, match="expected checksum 'datasum32'") as caught:
        DaqClient._check_layout({**GOOD, **change}, IMAGE, SENSOR)  # noqa: SLF001
    assert caught.value.code == "protocol"


async def _no_wait(seconds: float) -> None:
    pass
