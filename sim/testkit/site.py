"""A whole simulated observatory in one process, for integration tests (ours and users'):
weather, telescope, header service, camera with its DAQ, and archiver on one broker.

:func:`observatory` runs them, ENABLED, on any :class:`~cscs.core.transport.Connector`:
the in-memory bus (:class:`~cscs.core.testing.MemoryBroker`, no broker to install) or a
real broker; the :class:`Observatory` it gives points the telescope, takes images and
finds them archived and verified (:meth:`Observatory.take_images`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cscs.archiver.csc import ArchiverCsc
from cscs.archiver.interface import ImageArchived
from cscs.core.remote import Remote
from cscs.core.schema import TelemetrySpec
from cscs.core.settings import Settings
from cscs.core.testing import CscHarness, make_csc
from cscs.core.topics import Kind
from cscs.core.transport import Connector
from cscs.header_service.csc import HeaderServiceCsc
from sim.daq.camera import CameraCsc
from sim.ocs.telescope import DOME, TelescopeCsc
from sim.ocs.weather import WEATHER, WeatherCsc
from sim.testkit.archive import ArchiveWatch

__all__ = [
    "ARCHIVER_TEST_CONFIG", "Observatory", "camera_config_dir", "config_dir", "observatory",
]  # fmt: skip

ARCHIVER_TEST_CONFIG = {
    "catchup_interval": 0.0, "stall_timeout": 1.0, "daq_timeout": 2.0, "read_attempts": 2,
    "min_free_bytes": 0, "header_timeout": 10.0,
}  # fmt: skip


@dataclass
class Observatory:
    """One camera's site, ENABLED: each CSC with a Remote to it (``camera.remote``...),
    the archive's directory, and the archiver's configuration directory."""

    camera: CscHarness
    telescope: CscHarness
    header: CscHarness
    archiver: CscHarness
    archive: Path
    config_dir: Path  # CSCS_CONFIG_DIR of the archiver (holds Archiver/test.yaml)

    def watch(self, *, fitsverify: bool = False) -> ArchiveWatch:
        """The archive as announced from now on (``async with obs.watch() as archive``):
        images read out, their files archived and verified (:class:`ArchiveWatch`)."""
        return ArchiveWatch(
            self.archive, self.camera.remote, self.archiver.remote, fitsverify=fitsverify
        )

    async def take_images(
        self,
        count: int = 1,
        image_type: str = "BIAS",
        exposure_time: float = 0.0,
        *,
        timeout: float = 60.0,
        **params: Any,
    ) -> dict[str, list[ImageArchived]]:
        """Take ``count`` images (``takeImages``; the shutter open for FLAT and OBJECT;
        ``params``: more of its parameters, e.g. ``groupId``) and wait until every file
        of each is archived and verified: each image's ``imageArchived`` events, by
        sensor. :class:`~sim.testkit.archive.NotArchivedError` if a file is missing,
        failed or damaged."""
        shutter = image_type in ("FLAT", "OBJECT")
        command = {"numImages": count, "expTime": exposure_time, "shutter": shutter,
                   "imageType": image_type} | params  # fmt: skip
        async with self.watch() as archive:
            await self.camera.remote.command("takeImages", command, timeout=timeout * count)
            images = await archive.read_out(count, timeout)
            return {image: await archive.verified(image, timeout) for image in images}

    async def point(self, ra: float, dec: float, rotation: float = 0.0) -> None:
        """Slew, and wait until the mount reports the new position (as a night's script
        waits for the telescope to be in position before it exposes)."""
        remote = self.telescope.remote
        async with remote.stream("mount", kind=Kind.TELEMETRY) as mount:
            await remote.command(
                "slew", {"ra": ra, "dec": dec, "rotatorAngle": rotation, "object": "field",
                         "program": "TEST"}, timeout=30,
            )  # fmt: skip
            await mount.wait_for(lambda r: (r.data["ra"], r.data["dec"]) == (ra, dec), 30)

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


def camera_config_dir(tmp_path: Path, settings: dict[str, Any]) -> Path:
    """A camera configuration directory: the shipped one, and a `test` override that is
    `fast` changed by ``settings``."""
    root = tmp_path / "camera-config"
    shipped = CameraCsc.default_config_dir
    assert shipped is not None
    shutil.copytree(shipped, root / "Camera", dirs_exist_ok=True)
    fast = yaml.safe_load((shipped / "fast.yaml").read_text())
    (root / "Camera" / "test.yaml").write_text(yaml.safe_dump(fast | settings))
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
    camera: dict[str, Any] | None = None,
) -> AsyncIterator[Observatory]:
    """Weather:0, and for camera ``index``: Telescope, HeaderService, Camera, Archiver,
    all ENABLED (camera and telescope with their `fast` override; ``camera``: more
    settings for the camera's, e.g. ``sensors``); the weather pinned at its base values,
    the filter r."""
    state = tmp_path / f"state{index}"
    headers = state / "headers" / f"HeaderService-{index}"
    configs = config_dir(tmp_path / f"cam{index}", archiver or {}, headers)
    async with contextlib.AsyncExitStack() as stack:
        settings = Settings(prefix=prefix, state_dir=state)

        async def run(
            factory: Any, csc_index: int, override: str = "", own: Settings | None = None
        ) -> CscHarness:
            harness = await stack.enter_async_context(
                make_csc(factory, broker, index=csc_index, settings=own or settings)
            )
            await harness.remote.command("start", {"configurationOverride": override})
            await harness.remote.command("enable")
            return harness

        station: CscHarness | None = None
        if weather:
            station = await run(WeatherCsc, 0, "fast")  # 5 samples a second
            # The seeing would wander: pinned, so that the stars are as wide as tests assume.
            base = WeatherCsc.config_schema().base
            await station.remote.command("setWeather", base.model_dump())
        telescope = await run(TelescopeCsc, index, "fast")
        # The camera starts after, and hears this retained filter first: r, whatever
        # the wheel's first slot (ComCam's is u, where a 5 s exposure shows few stars).
        await telescope.remote.command("setFilter", {"filter": "r"})
        header = await run(HeaderServiceCsc, index)
        if camera:
            camera_configs = camera_config_dir(tmp_path / f"cam{index}", camera)
            own = Settings(prefix=prefix, state_dir=state, config_dir=camera_configs)
            camera_csc = await run(CameraCsc, index, "test", own)
        else:
            camera_csc = await run(CameraCsc, index, "fast")
        archiver_settings = Settings(prefix=prefix, state_dir=state, config_dir=configs)
        archiver_csc = await stack.enter_async_context(
            make_csc(ArchiverCsc, broker, index=index, settings=archiver_settings)
        )
        await archiver_csc.remote.command("start", {"configurationOverride": "test"})
        if enable_archiver:
            await archiver_csc.remote.command("enable")
        # What the header service needs before an exposure: a sample of the dome and of
        # the weather published after it subscribed (at its start); one published after
        # these subscriptions is one. Both at 5 Hz (`fast`), awaited side by side.
        sources = [(telescope, DOME)] + ([(station, WEATHER)] if station else [])
        await asyncio.gather(*(_one_sample(h.remote, spec) for h, spec in sources))
        archive = tmp_path / f"cam{index}" / "archive"
        yield Observatory(camera_csc, telescope, header, archiver_csc, archive, configs)


async def _one_sample(remote: Remote, spec: TelemetrySpec[Any]) -> None:
    async with remote.events(spec) as samples:
        await samples.next(10)
