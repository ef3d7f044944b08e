"""The repository's registry on PostgreSQL (the observatory's choice for a shared one):
the extension it needs made when it may be, several archives in one database each in
its own namespace, calibration validity kept by PostgreSQL's own constraints. A
server of the tests' own (tests/support/postgres.py): the `broker` tier."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from astropy.io import fits

from cscs.camera.geometry import Camera
from cscs.repository import Repository, RepositoryError
from tests.conftest import postgres_database
from tests.support.raws import archive_image, start_tai

pytestmark = pytest.mark.broker


@pytest.fixture
def database(postgres_admin: str) -> Iterator[str]:
    """A fresh database (dropped afterwards), as a user would give it: ``postgresql://``."""
    with postgres_database(postgres_admin) as url:
        yield "postgresql://" + url.partition("://")[2]


def extensions(url: str) -> set[str]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        names = connection.execute(sa.text("SELECT extname FROM pg_extension")).scalars()
        found = set(names)
    engine.dispose()
    return found


def test_archives_share_a_database_each_in_its_namespace(database: str, tmp_path: Path) -> None:
    north, south = tmp_path / "north", tmp_path / "south"
    with Repository.open(north, database, namespace="north") as first:
        assert "btree_gist" in extensions(database)  # made: the registry needs it
        first.register(archive_image(north, Camera.COMCAM, "CC_O_20261121_000004"))
        with Repository.open(south, database, namespace="south") as second:
            second.register(archive_image(south, Camera.LATISS, "AT_O_20261121_000001"))
            assert [r.instrument for r in second.query_raws("", limit=20)] == ["LATISS"]
        assert len(first.query_raws("instrument = 'LSSTComCam'", limit=20)) == 9
        assert first.query_raws("instrument = 'LATISS'", limit=20) == []
    assert not (north / "butler.sqlite3").exists()
    with Repository.open(north) as again:  # the archive remembers its registry
        assert len(again.query_raws("detector IN (0..8)", limit=20)) == 9


def test_a_namespace_holding_another_archive_is_refused(database: str, tmp_path: Path) -> None:
    Repository.open(tmp_path / "a", database, namespace="site").close()
    for _ in range(2):  # nothing half-made is left to open the other archive's tables
        with pytest.raises(RepositoryError, match="namespace 'site' already holds another"):
            Repository.open(tmp_path / "b", database, namespace="site")


def test_calibration_validity_and_qc_on_postgresql(database: str, tmp_path: Path) -> None:
    t0 = start_tai("AT_O_20261121_000001")
    with Repository.open(tmp_path, database) as repo:
        repo.register(archive_image(tmp_path, Camera.LATISS, "AT_O_20261121_000001"))
        paths = []
        for job in ("j1", "j2"):
            path = tmp_path / f"bias_{job}.fits"
            fits.PrimaryHDU(np.zeros((2, 2), np.float32)).writeto(path)
            paths.append(path)
        repo.register_calibration("bias", "LATISS", "R00_S00", paths[0], job_id="j1",
                                  valid_from_tai=t0)  # fmt: skip
        second = repo.register_calibration("bias", "LATISS", "R00_S00", paths[1], job_id="j2",
                                           valid_from_tai=t0 + 3600)  # fmt: skip
        assert second.valid_until_tai is None
        associations = list(repo.butler.registry.queryDatasetAssociations("bias", "LATISS/calib"))
        assert len(associations) == 2  # the first cut at the second's start: no overlap
        assert repo.record_qc("LATISS", "AT_O_20261121_000001", "R00_S00", {"psf_fwhm": 0.7})


def test_an_account_that_cannot_make_the_extension_is_told_who_can(
    postgres_admin: str, tmp_path: Path
) -> None:
    role = f"observer_{uuid.uuid4().hex[:8]}"  # roles are the server's, not the database's
    with postgres_database(postgres_admin) as url:
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        weak = sa.engine.make_url(url).set(username=role).render_as_string(False)
        try:
            with pytest.raises(RepositoryError, match="must run `CREATE EXTENSION btree_gist;`"):
                Repository.open(tmp_path, weak)
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f"DROP ROLE {role}"))
            admin.dispose()


def test_an_unreachable_registry_is_a_repository_error(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="cannot reach the registry database"):
        Repository.open(tmp_path, "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
