"""The test kit as a user meets it (docs/testkit.md): a test suite of their own, in a
directory of their own, that only installed the package; and what the kit promises on
its own: a plugin that costs nothing to the test runs that do not use it, and an archive
check that fails when a file was not archived."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cscs.core.testing import MemoryBroker
from sim.testkit import NotArchivedError, observatory

REPOSITORY = Path(__file__).resolve().parents[1]

# A user's test file, as docs/testkit.md tells them to write it: nothing imported from
# this repository's tests, only the installed package and its fixtures.
USER_TESTS = """
from pathlib import Path
from urllib.parse import urlparse

import pytest
from cscs.camera.verify import verify_raw_file

pytestmark = pytest.mark.asyncio

BIAS = {"numImages": 1, "expTime": 0.0, "shutter": False, "imageType": "BIAS"}


@pytest.mark.parametrize("cscs_broker", ["memory", "amqtt"], indirect=True)
async def test_a_bias_is_archived_and_verified(cscs_camera, cscs_archive):
    await cscs_camera.command("takeImages", BIAS, timeout=60)
    (image,) = await cscs_archive.read_out()
    files = await cscs_archive.verified(image)
    assert [f.sensor for f in files] == ["R00_S00"]  # LATISS: one CCD
    assert all(f.headerComplete for f in files)
    for f in files:  # what verified() checked, once more by hand
        path = Path(urlparse(f.url).path)
        assert verify_raw_file(path, f.byteSize, f.checkSum, f.checkSumAlgorithm) == []


async def test_the_observatory_takes_darks(cscs_observatory):
    images = await cscs_observatory.take_images(2, "DARK", 0.5)
    assert len(images) == 2
    for image, files in images.items():
        assert [f.imageName for f in files] == [image]
        assert files[0].url.startswith(cscs_observatory.archive.as_uri())
"""

USER_CONFIGURATION = """
[project]
name = "my-site-tests"
version = "0"

[tool.pytest.ini_options]
asyncio_default_fixture_loop_scope = "function"
filterwarnings = ["error"]
"""


def _user_environment() -> dict[str, str]:
    """This process's environment without what would lead pytest back here."""
    skip = {"PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST"}
    return {k: v for k, v in os.environ.items() if k not in skip}


@pytest.mark.long  # 7-17 s: the long tier keeps `make test` within 8 minutes
@pytest.mark.broker
@pytest.mark.timeout(600)
async def test_a_users_suite_finds_its_image_archived_and_verified(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    project = tmp_path_factory.mktemp("user-project")
    assert REPOSITORY not in project.resolve().parents
    (project / "pyproject.toml").write_text(USER_CONFIGURATION)
    (project / "test_site.py").write_text(USER_TESTS)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
        "--basetemp", str(project / "tmp"), "test_site.py",
        cwd=project, env=_user_environment(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(570):
        out, _ = await process.communicate()
    report = out.decode(errors="replace")
    assert process.returncode == 0, report
    assert "3 passed" in report, report
    assert str(REPOSITORY) not in report  # its own rootdir, none of our configuration


@pytest.mark.broker  # a fresh interpreter
def test_the_plugin_imports_nothing_of_the_project() -> None:
    """pytest loads the plugin in every run of the environment: it must not import the
    CSCs (seconds of astropy, numpy...) for test suites that never use it."""
    probe = (
        "import sys, sim.testkit.plugin; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('cscs', 'astropy', 'numpy', 'aiomqtt', 'zmq') or m.startswith('sim.testkit.site')); "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]", out


def _flip_a_byte(path: Path) -> None:
    """One byte near the end of the file changed on disk, as a failing disk would."""
    with path.open("r+b") as file:
        file.seek(-4000, os.SEEK_END)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))


async def test_a_file_damaged_or_never_archived_fails_the_check(tmp_path: Path, index: int) -> None:
    bias = {"numImages": 1, "expTime": 0.0, "shutter": False, "imageType": "BIAS"}
    async with (
        observatory(MemoryBroker(), f"kit{index}", tmp_path) as obs,
        obs.watch() as archive,
    ):
        await obs.camera.remote.command("takeImages", bias, timeout=60)
        (good,) = await archive.read_out()
        (archived,) = await archive.verified(good)
        _flip_a_byte(Path(urlparse(archived.url).path))
        with pytest.raises(NotArchivedError, match=r"(?s)announced.*Checksum verification failed"):
            await archive.verified(good)

        await obs.camera.remote.command("injectFault", {"kind": "corrupt", "count": 0})
        await obs.camera.remote.command("takeImages", bias, timeout=60)
        (failed,) = await archive.read_out()
        with pytest.raises(NotArchivedError, match=rf"{failed}: R00_S00: .*corrupt"):
            await archive.verified(failed)
