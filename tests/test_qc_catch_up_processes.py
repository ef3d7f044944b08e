"""Issue 30, "must show" (c): OCS Batch SIGKILLed (with its Dask workers) during five
science images and started again afterwards, as its supervisor would: QC for all five
is measured and forwarded by the Telemetry Gateway to the OCS side — what auto_qc
missed while it was down is caught up from the catalog.

Every CSC in its own ``cscs run`` process on Mosquitto (LATISS: one detector per
image), OCSBatch and the gateway configured by a site layer (``CSCS_SITE``) so that a
restart ``--state enabled`` gets the same configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import uuid
from pathlib import Path

import pytest
import yaml

from cscs import components
from cscs.archiver.interface import IMAGE_ARCHIVED
from cscs.catalog import BatchRecords, Catalog, sqlite_url
from cscs.core.remote import Remote
from cscs.core.states import State
from cscs.core.topics import CscAddress
from cscs.ocs_batch.catch_up import CATCH_UP
from cscs.telemetry_gateway.interface import IMAGE_QUALITY
from sim.site.processes import log_path, log_tail, spawn
from tests.support.process_site import ProcessSite

pytestmark = [pytest.mark.broker, pytest.mark.long, pytest.mark.timeout(300)]

IMAGES = 5
OBJECTS = {"expTime": 1.0, "shutter": True, "imageType": "OBJECT"}
SITE = "qccatchup"


def site_layer(config: Path, dm_prefix: str) -> dict[str, str]:
    """OCSBatch's, the gateway's and the OODS's configuration directories with this test's site
    layer; the environment that selects them."""
    layers = {
        "OCSBatch": {"auto_qc": True, "auto_qc_cameras": [1], "workers": 1,
                     "dm_prefix": dm_prefix, "auto_qc_catch_up_interval": 2.0,
                     "auto_qc_catch_up_grace": 1.0},
        "TelemetryGateway": {"dm_prefix": dm_prefix},
        "OODS": {"dm_prefix": dm_prefix},
    }  # fmt: skip
    for name, layer in layers.items():
        shipped = components.find(name).default_config_dir
        assert shipped is not None
        shutil.copytree(shipped, config / name)
        (config / name / f"_{SITE}.yaml").write_text(yaml.safe_dump(layer))
    return {"CSCS_CONFIG_DIR": str(config), "CSCS_SITE": SITE}


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


async def test_qc_missed_while_ocs_batch_was_down_is_caught_up_and_forwarded(
    process_site_now: ProcessSite, tmp_path: Path
) -> None:
    site = process_site_now
    env = {"CSCS_PREFIX": site.prefix, "CSCS_STATE_DIR": str(site.state),
           **site_layer(tmp_path, f"dm{uuid.uuid4().hex[:8]}")}  # fmt: skip
    batch, gateway = CscAddress("OCSBatch", 0, site.prefix), site.address("TelemetryGateway", 0)
    oods = site.address("OODS")  # auto QC measures what the OODS has registered
    logs = site.state / "logs"
    processes = {
        a: await spawn(a, site.broker.url, env, logs, "enabled") for a in (batch, gateway, oods)
    }
    try:
        async with (
            Remote(site.bus, batch) as ocs_batch,
            Remote(site.bus, gateway) as gateway_remote,
            Remote(site.bus, site.address("Camera")) as camera,
            Remote(site.bus, site.address("Archiver")) as archiver,
            gateway_remote.events(IMAGE_QUALITY) as forwarded,
            archiver.events(IMAGE_ARCHIVED) as archived,
            ocs_batch.stream("summaryState") as batch_states,
        ):
            for remote in (ocs_batch, gateway_remote):
                try:
                    await remote.wait_for_state(State.ENABLED, timeout=90)
                except TimeoutError:
                    raise AssertionError(log_tail(log_path(logs, remote.address), 20)) from None
            taking = asyncio.create_task(
                camera.command("takeImages", {"numImages": IMAGES, **OBJECTS}, timeout=180)
            )
            names = [(await archived.next(90)).data.imageName]
            # Killed as the first image is archived: its auto_qc job (if any) is lost,
            # and the next four are announced to nobody.
            victim = processes[batch]
            for pid in [victim.pid, *descendants(victim.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await victim.wait()
            await taking
            while len(names) < IMAGES:
                names.append((await archived.next(90)).data.imageName)
            processes[batch] = await spawn(batch, site.broker.url, env, logs, "enabled")
            await batch_states.wait_for(
                lambda e: e.data.get("summaryState") == State.ENABLED.value, 90
            )
            heard: set[str] = set()
            try:
                while not set(names) <= heard:
                    heard.add((await forwarded.next(120)).data.imageName)
            except TimeoutError:
                raise AssertionError(
                    f"forwarded {sorted(heard)} of {names}:\n{log_tail(log_path(logs, batch), 30)}"
                    f"\nOODS:\n{log_tail(log_path(logs, oods), 20)}"
                ) from None
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.terminate()
                await process.wait()
    catalog = Catalog(sqlite_url(site.state / "archive" / "catalog.sqlite"))
    try:
        records = BatchRecords(catalog)
        origins = {name: records.qc_origins(name) for name in names}
    finally:
        catalog.close()
    assert all(origins.values()), origins
    assert sum(CATCH_UP in o for o in origins.values()) >= IMAGES - 1, origins
