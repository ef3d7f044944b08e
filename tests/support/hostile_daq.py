"""The archiver alone in its own process, and a forged ``daqAvailable``: what the tests
and the benchmark of a hostile DAQ (``sim.daq.hostile``) share."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import cscs.archiver
from cscs.core.broker import EmbeddedBroker
from cscs.core.protocol import encode
from cscs.core.tai import current_tai
from sim.site.processes import spawn, stop
from tests.support.process_site import ProcessSite

__all__ = ["DAQ_TIMEOUT", "announce_daq", "archiver_alone"]

DAQ_TIMEOUT = 2.0  # s: the archiver's daq_timeout here (10 by default), to keep tests quick


async def announce_daq(site: ProcessSite, endpoint: str) -> None:
    """A ``daqAvailable`` as Camera ``site.index`` would publish it, from a stranger."""
    forged = {"url": endpoint, "capacityBytes": 1, "seq": 1, "sent_tai": current_tai()}
    await site.bus.publish(site.address("Camera").event("daqAvailable"), encode(forged), qos=1)


@contextlib.asynccontextmanager
async def archiver_alone(broker: EmbeddedBroker, state: Path) -> AsyncIterator[ProcessSite]:
    """Archiver:1 (LATISS), alone in its own process, ENABLED, with no camera: the only
    DAQ it hears of is the one the test announces."""
    config = state / "config" / "Archiver"
    shutil.copytree(Path(cscs.archiver.__file__).parent / "config", config)
    init = config / "_init.yaml"
    init.write_text(init.read_text().replace("daq_timeout: 10.0", f"daq_timeout: {DAQ_TIMEOUT}"))
    site = ProcessSite(broker, f"hostile{uuid.uuid4().hex[:8]}", state, 1)
    address = site.address("Archiver")
    env = {"CSCS_PREFIX": site.prefix, "CSCS_STATE_DIR": str(state),
           "CSCS_CONFIG_DIR": str(state / "config")}  # fmt: skip
    (state / "logs").mkdir(parents=True, exist_ok=True)
    process = await spawn(address, broker.url, env, state / "logs")
    site.processes[address], site.pids[address] = process, process.pid
    try:
        async with site.connected():
            await site.bring_up(address)
            yield site
    finally:
        await stop([process])
