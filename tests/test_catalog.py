"""The archive catalog on SQLite (default) and PostgreSQL (production)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from cscs.catalog import ArchivedFile, Catalog, CatalogError, sqlite_url


def row(image: str, sensor: str, *, header: bool = True) -> ArchivedFile:
    return ArchivedFile(
        image_name=image, sensor=sensor, instrument="LSSTComCam", day_obs=image.split("_")[2],
        path=f"/archive/{image}_{sensor}.fits", byte_size=75_574_080, checksum="0" * 8,
        checksum_algorithm="adler32",
        header_complete=header, missing_keywords="" if header else "header not received",
        daq_image=f"tcp://daq {image}", header_url="file:///h.yaml" if header else "",
        header_md5="1" * 32 if header else "", software_version="0.1.0",
        exposure_start_tai=1.8e9, archived_tai=1.8e9 + 20,
    )  # fmt: skip


def test_record_lookup_and_complete_a_header_later(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    try:
        catalog.record(row("CC_O_20261121_000001", "R22_S00"))
        catalog.record(row("CC_O_20261121_000001", "R22_S01", header=False))
        assert catalog.count() == 2
        assert catalog.lookup("CC_O_20261121_000001", "R22_S00") == row(
            "CC_O_20261121_000001", "R22_S00"
        )
        assert catalog.lookup("CC_O_20261121_000001", "R22_S22") is None
        assert [r.sensor for r in catalog.without_header()] == ["R22_S01"]
        catalog.record(row("CC_O_20261121_000001", "R22_S01"))  # the header came: same row
        assert catalog.count() == 2
        assert catalog.without_header() == []
        assert [r.sensor for r in catalog.files_of("CC_O_20261121_000001")] == [
            "R22_S00",
            "R22_S01",
        ]
    finally:
        catalog.close()
    reopened = Catalog(catalog_url)  # survives a restart
    assert reopened.count() == 2
    reopened.close()


def test_one_row_per_file_is_enforced_by_the_database(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    try:
        catalog.record(row("CC_O_20261121_000002", "R22_S00"))
        with catalog.engine.begin() as connection, pytest.raises(sa.exc.IntegrityError):
            connection.execute(sa.text(
                "INSERT INTO archived_files (image_name, sensor, instrument, day_obs, path, "
                "byte_size, checksum, checksum_algorithm, header_complete, missing_keywords, "
                "daq_image, header_url, header_md5, software_version, exposure_start_tai, "
                "archived_tai) VALUES ('CC_O_20261121_000002', 'R22_S00', 'x', 'x', 'x', 1, "
                "'x', 'md5', true, '', '', '', '', '', 0, 0)"
            ))  # fmt: skip
    finally:
        catalog.close()


def test_an_unreachable_catalog_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot open the archive catalog at postgresql"):
        Catalog("postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(CatalogError, match="cannot open the archive catalog at sqlite"):
        Catalog(sqlite_url(tmp_path / "missing-dir" / "catalog.sqlite"))


def test_a_catalog_an_earlier_version_made_gains_the_new_columns(catalog_url: str) -> None:
    """QC metrics recorded before zero points were measured stay; new ones have one."""
    from cscs.catalog import BatchRecords

    Catalog(catalog_url).close()
    engine = sa.create_engine(catalog_url)
    for _ in range(3):
        with engine.begin() as connection:  # as the version before zero points left it
            connection.execute(sa.text("ALTER TABLE qc_metrics DROP COLUMN zero_point"))
        # An archiver and OCSBatch may open it at the same moment: each must succeed.
        with ThreadPoolExecutor(6) as pool:
            for opened in list(pool.map(lambda _: Catalog(catalog_url), range(6))):
                opened.close()
    engine.dispose()
    catalog = Catalog(catalog_url)
    try:
        records = BatchRecords(catalog)
        metrics = {"imageName": "CC_O_20261121_000001", "sensor": "R22_S11", "skyMean": 1.0,
                   "skyRms": 2.0, "nSources": 3, "nPsfStars": 1, "zeroPoint": 27.5}  # fmt: skip
        records.record_qc("job-1", metrics, 1.8e9)
        assert records.qc_of("CC_O_20261121_000001")["R22_S11"]["zeroPoint"] == 27.5
    finally:
        catalog.close()
