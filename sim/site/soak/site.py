"""The soak's site: Mosquitto (sessions kept across its restarts), the EFD writer, every
CSC of two cameras (LATISS and ComCam) in its own ``cscs run`` process, their configuration as a
site would give it (``CSCS_CONFIG_DIR``, ``CSCS_SITE=soak``), and the Telemetry
Gateway's OCS-side link through a relay the soak can cut."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cscs import components
from cscs.camera.geometry import Camera
from cscs.core.broker import EmbeddedBroker
from cscs.core.topics import CscAddress
from sim.site.influxd import InfluxServer
from sim.site.processes import log_path, log_tail, spawn, stop
from sim.site.soak.link import LinkCutter

__all__ = ["SoakSite", "soak_site"]

CAMERAS = (Camera.LATISS, Camera.COMCAM)
GATEWAY = CscAddress("TelemetryGateway", 0)
#: Records everything said on the bus into the EFD (the embedded store under the state
#: directory, or with ``--efd influxdb`` the soak's own influxd), which headers missed
#: while a header service was down are rebuilt from. A CSC like the others, started by
#: name: the soak imports none of them.
EFD_WRITER = CscAddress("EfdWriter", 0)
#: Image QC measures one detector per image: the one LATISS has, ComCam's centre.
QC_SENSORS = ["R00_S00", "R22_S11"]


def addresses() -> list[CscAddress]:
    """Every CSC of the night, in the order they start (the EFD writer first: it records
    what the others say from their start; the camera last: it announces its DAQ to
    archivers already listening)."""
    site = [EFD_WRITER, CscAddress("Weather", 0), CscAddress("OCSBatch", 0), GATEWAY]
    for camera in CAMERAS:
        names = ("Telescope", "HeaderService", "Archiver", "OODS", "Camera")
        site += [CscAddress(name, camera.value) for name in names]
    return site


def site_configuration(broker_url: str, min_free_bytes: int) -> dict[str, dict[str, Any]]:
    """What differs from the shipped defaults at this site, by CSC (``_soak.yaml``)."""
    watched = [f"{name}:{c.value}" for c in CAMERAS
               for name in ("Archiver", "HeaderService", "OODS")]  # fmt: skip
    return {
        "Camera": {"readout_time": 0.2, "store_bytes": 6 * 2**30},
        "Archiver": {
            "header_timeout": 5.0,
            "catchup_interval": 10.0,
            "min_free_bytes": min_free_bytes,
        },
        # QC missed while OCS Batch was down is caught up within ~30 s (the files are
        # pruned, once verified, 180 s after at the latest).
        "OCSBatch": {
            "auto_qc": True,
            "auto_qc_sensors": QC_SENSORS,
            "auto_qc_catch_up_interval": 15.0,
            "auto_qc_catch_up_grace": 10.0,
        },
        "TelemetryGateway": {
            "dm_broker": broker_url,  # its own connection is the OCS side, through the relay
            "health": {
                "watched": [*watched, "OCSBatch:0", str(EFD_WRITER)],
                "heartbeat_timeout": 10.0,
            },
        },
    }


def write_configuration(directory: Path, overrides: dict[str, dict[str, Any]]) -> None:
    """Each CSC's shipped configuration directory copied, with the site's layer added."""
    for address in addresses():
        target = directory / address.name
        if target.exists():
            continue
        shipped = components.find(address.name).default_config_dir
        if shipped is not None:
            shutil.copytree(shipped, target)
        else:
            target.mkdir(parents=True)
        layer = overrides.get(address.name, {})  # a site has a layer for each, if empty
        text = "# The soak's site layer (sim/site/soak/site.py).\n"
        text += yaml.safe_dump(layer, sort_keys=False) if layer else "schema_version: 1\n"
        (target / "_soak.yaml").write_text(text, encoding="utf-8")


@dataclass
class SoakSite:
    broker: EmbeddedBroker
    link: LinkCutter
    state: Path
    env: dict[str, str]
    processes: dict[CscAddress, asyncio.subprocess.Process] = field(default_factory=dict)
    influx: InfluxServer | None = None  # the EFD's store, when InfluxDB (else SQLite)

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def archive(self) -> Path:
        return self.state / "archive"

    async def spawn(self, address: CscAddress) -> None:
        """``cscs run … --state enabled``: as a supervisor (re)starts a service."""
        url = self.link.url if address == GATEWAY else self.broker.url
        self.processes[address] = await spawn(address, url, self.env, self.logs, "enabled")

    async def kill(self, address: CscAddress) -> None:
        """SIGKILL the CSC and every process it started (OCS Batch's Dask workers): a
        crashed host, not a clean stop."""
        process = self.processes[address]
        for pid in [process.pid, *_descendants(process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await process.wait()

    def freeze(self, address: CscAddress, frozen: bool) -> None:
        """SIGSTOP (a hung process: no heartbeat, no work, no last will) or SIGCONT."""
        os.kill(self.processes[address].pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def exited(self) -> list[str]:
        """CSCs whose process ended by itself, with the end of their logs."""
        return [
            f"{address} exited ({process.returncode}):\n{log_tail(log_path(self.logs, address))}"
            for address, process in self.processes.items()
            if process.returncode is not None
        ]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@contextlib.asynccontextmanager
async def soak_site(
    state: Path, min_free_bytes: int, influx: InfluxServer | None = None
) -> AsyncIterator[SoakSite]:
    """Mosquitto, the relay and every CSC, ENABLED by their supervisor's start; every
    process stopped at the end (SIGTERM, then SIGKILL). With ``influx`` (started by the
    caller, who stops it), every process's ``CSCS_EFD`` is its database ``efd``."""
    (state / "logs").mkdir(parents=True, exist_ok=True)
    async with EmbeddedBroker("mosquitto", persistence=True) as broker:
        write_configuration(state / "config", site_configuration(broker.url, min_free_bytes))
        env = {"CSCS_STATE_DIR": str(state), "CSCS_CONFIG_DIR": str(state / "config"),
               "CSCS_SITE": "soak"}  # fmt: skip
        if influx is not None:
            env["CSCS_EFD"] = influx.url("efd")
        async with LinkCutter(broker.host, broker.port) as link:
            site = SoakSite(broker, link, state, env, influx=influx)
            try:
                for address in addresses():
                    await site.spawn(address)
                yield site
            finally:
                await stop(list(site.processes.values()))
