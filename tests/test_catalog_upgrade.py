"""A catalog made by the release before ICD 1.1 (MD5 checksums, no schema version),
opened by this one, on SQLite and PostgreSQL: upgraded in place, nothing lost, its MD5
rows still verifying as MD5; new rows Adler-32; a catalog newer than the code refused."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from cscs.camera.checksum import check_algorithm
from cscs.camera.fits import write_raw_fits
from cscs.camera.verify import verify_raw_file
from cscs.catalog import ArchivedFile, Catalog, CatalogError
from cscs.catalog.versions import _STEPS, SCHEMA_VERSION, VERSIONS, _write
from tests.support.pixels import sums_of
from tests.test_catalog import row
from tests.test_fits import EXTENSIONS, PRIMARY

# The two tables whose checksum column changed, exactly as the release of 2026-11-21
# made them (cscs/catalog/catalog.py and batch.py then).
V1 = sa.MetaData()
sa.Table(
    "archived_files", V1,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_name", sa.String(64), nullable=False, index=True),
    sa.Column("sensor", sa.String(16), nullable=False),
    sa.Column("instrument", sa.String(32), nullable=False),
    sa.Column("day_obs", sa.String(8), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("byte_size", sa.BigInteger, nullable=False),
    sa.Column("md5", sa.String(32), nullable=False),
    sa.Column("header_complete", sa.Boolean, nullable=False),
    sa.Column("missing_keywords", sa.Text, nullable=False),
    sa.Column("daq_image", sa.Text, nullable=False),
    sa.Column("header_url", sa.Text, nullable=False),
    sa.Column("header_md5", sa.String(32), nullable=False),
    sa.Column("software_version", sa.String(32), nullable=False),
    sa.Column("exposure_start_tai", sa.Float, nullable=False),
    sa.Column("archived_tai", sa.Float, nullable=False),
    sa.UniqueConstraint("image_name", "sensor", name="one_file_per_sensor"),
)  # fmt: skip
sa.Table(
    "calibration_products", V1,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("instrument", sa.String(32), nullable=False),
    sa.Column("sensor", sa.String(16), nullable=False),
    sa.Column("job_id", sa.String(40), nullable=False, index=True),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("software_version", sa.String(32), nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("byte_size", sa.BigInteger, nullable=False),
    sa.Column("md5", sa.String(32), nullable=False),
    sa.Column("created_tai", sa.Float, nullable=False),
)  # fmt: skip

OLD_IMAGE = "CC_O_20261120_000007"


def make_v1_catalog(url: str, archive: Path) -> tuple[Path, int, str]:
    """A catalog as the old release left it: one raw file archived with its MD5, and a
    calibration product."""
    written = write_raw_fits(archive / f"{OLD_IMAGE}_R22_S00.fits", PRIMARY, EXTENSIONS,
                             datasums=sums_of(EXTENSIONS), checksum="md5")  # fmt: skip
    engine = sa.create_engine(url)
    try:
        V1.create_all(engine)
        with engine.begin() as connection:
            connection.execute(V1.tables["archived_files"].insert().values(
                image_name=OLD_IMAGE, sensor="R22_S00", instrument="LSSTComCam",
                day_obs="20261120", path=str(written.path), byte_size=written.byte_size,
                md5=written.checksum, header_complete=True, missing_keywords="",
                daq_image=f"tcp://daq {OLD_IMAGE}", header_url="file:///h.yaml",
                header_md5="1" * 32, software_version="0.1.0", exposure_start_tai=1.79e9,
                archived_tai=1.79e9 + 20,
            ))  # fmt: skip
            connection.execute(V1.tables["calibration_products"].insert().values(
                path="/archive/bias.fits", kind="bias", instrument="LSSTComCam",
                sensor="R22_S00", job_id="20261120-0000", inputs="[]", software_version="0.1.0",
                config="{}", byte_size=1, md5="2" * 32, created_tai=1.79e9,
            ))  # fmt: skip
    finally:
        engine.dispose()
    return written.path, written.byte_size, written.checksum


def test_an_md5_catalog_is_upgraded_in_place_and_its_files_still_verify(
    catalog_url: str,
    tmp_path: Path,
) -> None:
    path, size, md5 = make_v1_catalog(catalog_url, tmp_path)
    catalog = Catalog(catalog_url)
    try:
        old = catalog.lookup(OLD_IMAGE, "R22_S00")
        assert old is not None
        assert (old.checksum, old.checksum_algorithm, old.byte_size) == (md5, "md5", size)
        assert verify_raw_file(path, old.byte_size, old.checksum,
                               check_algorithm(old.checksum_algorithm)) == []  # fmt: skip
        new: ArchivedFile = row("CC_O_20261121_000001", "R22_S00")
        catalog.record(new)
        assert catalog.lookup(new.image_name, "R22_S00") == new
        with catalog.engine.connect() as connection:
            assert connection.execute(sa.select(VERSIONS.c.version)).scalar_one() == SCHEMA_VERSION
            product = connection.execute(sa.text(
                "SELECT checksum, checksum_algorithm FROM calibration_products"
            )).one()  # fmt: skip
        assert tuple(product) == ("2" * 32, "md5")
    finally:
        catalog.close()
    again = Catalog(catalog_url)  # opening an up-to-date catalog changes nothing
    try:
        assert again.count() == 2
    finally:
        again.close()


def test_a_catalog_newer_than_the_software_is_refused(catalog_url: str) -> None:
    Catalog(catalog_url).close()
    engine = sa.create_engine(catalog_url)
    with engine.begin() as connection:
        connection.execute(sa.update(VERSIONS).values(version=SCHEMA_VERSION + 1))
    engine.dispose()
    with pytest.raises(CatalogError, match=f"version {SCHEMA_VERSION + 1}, newer than"):
        Catalog(catalog_url)


def test_an_upgrade_cut_short_is_finished_on_the_next_open(
    catalog_url: str,
    tmp_path: Path,
) -> None:
    """SQLite commits each ALTER TABLE by itself: a process killed between the rename
    and the new column leaves a catalog half-way, which the next open finishes."""
    *_, md5 = make_v1_catalog(catalog_url, tmp_path)
    engine = sa.create_engine(catalog_url)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE archived_files RENAME COLUMN md5 TO checksum"))
    engine.dispose()
    catalog = Catalog(catalog_url)
    try:
        old = catalog.lookup(OLD_IMAGE, "R22_S00")
        assert old is not None
        assert (old.checksum, old.checksum_algorithm) == (md5, "md5")
    finally:
        catalog.close()


def test_processes_opening_an_old_catalog_together_take_turns(
    catalog_url: str,
    tmp_path: Path,
) -> None:
    make_v1_catalog(catalog_url, tmp_path)
    with ThreadPoolExecutor(4) as pool:
        catalogs = list(pool.map(lambda _: Catalog(catalog_url), range(4)))
    try:
        assert {c.count() for c in catalogs} == {1}
        old = catalogs[0].lookup(OLD_IMAGE, "R22_S00")
        assert old is not None
        assert old.checksum_algorithm == "md5"
    finally:
        for catalog in catalogs:
            catalog.close()


def test_a_version_2_catalog_gains_the_header_provenance(
    catalog_url: str,
    tmp_path: Path,
) -> None:
    """Version 3: ``header_source``. A file archived with a header before it was
    recorded had it from the live header service; one without has none."""
    make_v1_catalog(catalog_url, tmp_path)
    engine = sa.create_engine(catalog_url)
    with engine.begin() as connection:  # as version 2 left it, its version recorded
        _STEPS[2](connection)
        _write(connection, 2)
        connection.execute(sa.text(
            "INSERT INTO archived_files (image_name, sensor, instrument, day_obs, path, "
            "byte_size, checksum, checksum_algorithm, header_complete, missing_keywords, "
            "daq_image, header_url, header_md5, software_version, exposure_start_tai, "
            "archived_tai) VALUES ('CC_O_20261120_000008', 'R22_S00', 'LSSTComCam', "
            "'20261120', '/a.fits', 1, '1', 'adler32', false, 'header not received', 'd', "
            "'', '', '0.1.0', 1.79e9, 1.79e9)"
        ))  # fmt: skip
    engine.dispose()
    catalog = Catalog(catalog_url)
    try:
        with_header = catalog.lookup(OLD_IMAGE, "R22_S00")
        without = catalog.lookup("CC_O_20261120_000008", "R22_S00")
        assert with_header is not None
        assert without is not None
        assert (with_header.header_source, without.header_source) == ("live", "")
        rebuilt = dataclasses.replace(without, header_source="efd", header_url="file:///h")
        catalog.record(rebuilt)
        assert catalog.lookup("CC_O_20261120_000008", "R22_S00") == rebuilt
        with catalog.engine.connect() as connection:
            assert connection.execute(sa.select(VERSIONS.c.version)).scalar_one() == 3
    finally:
        catalog.close()
