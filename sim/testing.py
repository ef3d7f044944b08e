"""A whole simulated observatory in one process, for integration tests (ours and users'):
weather, telescope, header service, camera with its DAQ, and archiver on one broker."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cscs.archiver.csc import ArchiverCsc
from cscs.core.settings import Settings
from cscs.core.testing import CscHarness, make_csc
from cscs.core.transport import Connector
from cscs.header_service.csc import HeaderServiceCsc
from sim.daq.camera import CameraCsc
from sim.ocs.telescope import DOME, TelescopeCsc
from sim.ocs.weather import WeatherCsc

__all__ = ["ARCHIVER_TEST_CONFIG", "Observatory", "observatory"]

ARCHIVER_TEST_CONFIG = {
    "catchup_interval": 0.0, "stall_timeout": 1.0, "daq_timeout": 2.0, "read_attempts": 2,
    "min_free_bytes": 0, "header_timeout": 10.0,
}  # fmt: skip


@dataclass
class Observatory:
    camera: CscHarness
    telescope: CscHarness
    header: CscHarness
    archiver: CscHarness
    archive: Path
    config_dir: Path  # CSCS_CONFIG_DIR of the archiver (holds Archiver/test.yaml)

    def archiver_override(self, name: str, **settings: Any) -> str:
        """Write another archiver override (this observatory's `test` override changed
        by ``settings``) and return its name for ``start``."""
        test = yaml.safe_load((self.config_dir / "Archiver" / "test.yaml").read_text())
        values = test | settings
        (self.config_dir / "Archiver" / f"{name}.yaml").write_text(yaml.safe_dump(values))
        return name


def config_dir(tmp_path: Path, archiver: dict[str, Any], headers: Path) -> Path:
    root = tmp_path / "config"
    shipped = ArchiverCsc.default_config_dir
    assert shipped is not None
    shutil.copytree(shipped, root / "Archiver", dirs_exist_ok=True)
    where = {
        "archive_root": str(tmp_path / "archive"),
        "header_url_template": headers.as_uri() + "/{day_obs}/{image}.yaml",
    }
    (root / "Archiver" / "test.yaml").write_text(
        yaml.safe_dump(ARCHIVER_TEST_CONFIG | where | archiver)
    )
    return root


@contextlib.asynccontextmanager
async def observatory(
    broker: Connector,
    prefix: str,
    tmp_path: Path,
    *,
    index: int = 1,
    archiver: dict[str, Any] | None = None,
    weather: bool = True,
    enable_archiver: bool = True,
) -> AsyncIterator[Observatory]:
    """Weather:0, and for camera ``index``: Telescope, HeaderService, Camera, Archiver,
    all ENABLED (camera and telescope with their `fast` override)."""
    state = tmp_path / f"state{index}"
    headers = state / "headers" / f"HeaderService-{index}"
    configs = config_dir(tmp_path / f"cam{index}", archiver or {}, headers)
    async with contextlib.AsyncExitStack() as stack:
        settings = Settings(prefix=prefix, state_dir=state)

        async def run(factory: Any, csc_index: int, override: str = "") -> CscHarness:
            harness = await stack.enter_async_context(
                make_csc(factory, broker, index=csc_index, settings=settings)
            )
            await harness.remote.command("start", {"configurationOverride": override})
            await harness.remote.command("enable")
            return harness

        if weather:
            await run(WeatherCsc, 0)
        telescope = await run(TelescopeCsc, index, "fast")
        header = await run(HeaderServiceCsc, index)
        camera = await run(CameraCsc, index, "fast")
        archiver_settings = Settings(prefix=prefix, state_dir=state, config_dir=configs)
        archiver_csc = await stack.enter_async_context(
            make_csc(ArchiverCsc, broker, index=index, settings=archiver_settings)
        )
        await archiver_csc.remote.command("start", {"configurationOverride": "test"})
        if enable_archiver:
            await archiver_csc.remote.command("enable")
        async with telescope.remote.events(DOME) as dome:  # the header service has heard it
            await dome.next(10)
            await dome.next(10)
        archive = tmp_path / f"cam{index}" / "archive"
        yield Observatory(camera, telescope, header, archiver_csc, archive, configs)
