"""What an archiver configuration names, opened before the CSC switches to it: the
archive and its catalog, the DAQ (when the configuration names one) and the Dask
executor. If any of them cannot be opened, those already opened are closed again and
the CSC keeps what it had, so a refused configuration changes nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from cscs.archiver.executor import DaskArchiving
from cscs.archiver.interface import ArchiverConfig
from cscs.archiver.reader import DaqOpener
from cscs.archiver.store import ArchiveStore
from cscs.camera.geometry import Camera
from cscs.catalog import CatalogError
from cscs.cluster import EngineError
from cscs.core.errors import ExpectedError
from cscs.daq.reader import DaqReader

__all__ = ["Opened", "open_configured"]


@dataclass(frozen=True)
class Opened:
    store: ArchiveStore
    stale: int  # half-written files a crash left, removed
    daq: DaqReader | None  # None: keep the current one
    dask: DaskArchiving | None  # None: executor local


async def open_configured(
    config: ArchiverConfig,
    camera: Camera,
    default_root: Path,
    open_daq: DaqOpener,
    current_daq: str,
    current_dask: DaskArchiving | None,
) -> Opened:
    """ExpectedError naming what could not be opened (the rest closed again)."""
    try:
        store, stale = await asyncio.to_thread(
            ArchiveStore.open, config.root(default_root), camera,
            catalog_url=config.catalog_url, compression=config.compression,
            checksum=config.checksum_algorithm, min_free_bytes=config.min_free_bytes,
        )  # fmt: skip
    except (OSError, CatalogError) as exc:
        raise ExpectedError(str(exc)) from None
    daq: DaqReader | None = None
    try:
        if config.daq_url and config.daq_url != current_daq:
            try:
                daq = await open_daq(config.daq_url, config.daq_timeout, config.stall_timeout)
            except Exception as exc:
                raise ExpectedError(f"cannot read from the DAQ at {config.daq_url}: {exc}") from exc
        dask = await _executor(config, current_dask)
    except BaseException:
        await asyncio.to_thread(store.close)
        if daq is not None:
            await daq.close()
        raise
    return Opened(store, stale, daq, dask)


async def _executor(config: ArchiverConfig, current: DaskArchiving | None) -> DaskArchiving | None:
    """The Dask client ``config`` asks for: the current one if it is the same."""
    if config.executor == "local":
        return None
    if current is not None and current.executor == config.executor and current.connected:
        return current
    try:
        return await DaskArchiving.start(
            config.executor, config.dask_workers, config.dask_threads_per_worker,
            config.scheduler_timeout,
        )  # fmt: skip
    except EngineError as exc:
        raise ExpectedError(str(exc)) from None
