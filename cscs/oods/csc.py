"""``OODS:{index}``: every archived file in the archive's Butler repository, and every
image in ConsDB (docs/oods.md, ADR 0038).

One OODS per camera, as the observatory runs one per camera (ctrl_oods: ATOODS,
CCOODS, MTOODS) and as this site runs one Archiver per camera: ``OODS:{index}``
follows ``Archiver:{index}`` (``imageArchived``, ``imageRetrievalFailed``) and
``Camera:{index}`` (``endReadout``: which sensors make the image whole). Every message
is a prompt only: what is registered is what the archive catalog holds
(:mod:`~cscs.oods.registrar`). Each image's files are registered together, ConsDB gets
their headers, and ``imageInOODS`` says the image is in (:mod:`~cscs.oods.ledger`
decides when; :mod:`~cscs.oods.work` does it, one round at a time).

Reconciliation (:mod:`~cscs.oods.reconcile`) registers what the catalog holds and the
repository lacks, at ``enable`` and after each reconnection to the broker; the
quick-look QC OCS Batch measured is recorded in ConsDB when its DM-internal QC summary
is heard (on a connection of its own to the DM side, as the Telemetry Gateway reads
it), and caught up at ``enable`` and after each reconnection of that connection.

It works while ENABLED. A store or the catalog failing is retried with back-off (an
``errorCode`` says so once, ``oodsStatus`` all along); nothing is dropped.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from cscs.camera.events import END_READOUT, EndReadout
from cscs.camera.geometry import Camera, camera_for_index
from cscs.catalog import Catalog, CatalogError, sqlite_url
from cscs.core.backoff import Backoff
from cscs.core.broker_address import BrokerAddress
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.follow import on
from cscs.core.logs import Throttle
from cscs.core.remote import Parsed
from cscs.core.schema import NoParams
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.tasks import cancel_and_wait
from cscs.core.topics import CscAddress
from cscs.core.transport import Message
from cscs.oods.interface import (
    CONFIG_DIR,
    IMAGE_IN_OODS,
    INTERFACE,
    OODS_STATUS,
    OodsConfig,
    OodsStatus,
)
from cscs.oods.ports import ConsDbPort, RegistryPort, StoreUnavailableError
from cscs.oods.prompts import (
    ARCHIVED,
    RETRIEVAL_FAILED,
    Archived,
    PromptError,
    RetrievalFailed,
    image_of,
    qc_image,
    sensors_of,
)
from cscs.oods.reconcile import QuicklookMark, reconcile_files, reconcile_quicklook
from cscs.oods.registrar import Registrar
from cscs.oods.work import Stores, Work

__all__ = ["OodsCsc", "StoreOpener"]

STATUS_INTERVAL = 5.0
_QC_LOOK_BACK = 7 * 86400.0  # s: a first run records the QC measured this long ago since
_QC_PAGE = 200  # images whose QC is recorded per step of its reconciliation
_FOR_EVER = 365 * 86400.0

#: Opens the repository and ConsDB a configuration names: (config, archive root) →
#: (registry, ConsDB); StoreUnavailableError or OSError naming the cause.
StoreOpener = Callable[[OodsConfig, Path], tuple[RegistryPort, ConsDbPort]]


def _open_real_stores(config: OodsConfig, root: Path) -> tuple[RegistryPort, ConsDbPort]:
    from cscs.oods.stores import open_stores  # the Butler's import costs ~1.4 s

    return open_stores(config, root)


class OodsCsc(BaseCsc[OodsConfig]):
    interface = INTERFACE
    config_schema = OodsConfig
    default_config_dir: ClassVar[Path | None] = CONFIG_DIR

    def __init__(
        self, index: int = 1, *, open_stores: StoreOpener = _open_real_stores, **kwargs: Any
    ) -> None:
        self.camera: Camera = camera_for_index(index)
        super().__init__(index, **kwargs)
        self.archiver_address = CscAddress("Archiver", index, self.address.prefix)
        self.camera_address = CscAddress("Camera", index, self.address.prefix)
        self._open_stores = open_stores
        self.work = Work(
            self.config, self.camera.instrument,
            announce=lambda event: self.publish_event(IMAGE_IN_OODS, event),
            report_error=self.report_error, log=self.log, clock=time.monotonic,
        )  # fmt: skip
        self._ignored = Throttle()
        self._dm_reader: asyncio.Task[None] | None = None
        self._dm_subscribed = asyncio.Event()
        self._reconciling: asyncio.Task[None] | None = None
        self._reconcile_since = math.inf  # nothing to walk; -inf: the whole catalog

    # ---- life ------------------------------------------------------------------------

    async def configure(self, config: OodsConfig) -> None:
        """Open the catalog, the repository and ConsDB the configuration names, then
        switch to them: a refusal changes nothing."""
        root = config.root(self.state_dir / "archive")
        stores = await asyncio.to_thread(self._open, config, root)
        previous, self.work.stores = self.work.stores, stores
        self.work.reconfigured(config)
        if previous is not None:
            await asyncio.to_thread(previous.close)
        await self.unfollow()
        await self.follow_events(
            self.archiver_address,
            on(ARCHIVED, self._on_archived),
            on(RETRIEVAL_FAILED, self._on_retrieval_failed),
        )
        await self.follow(self.camera_address, END_READOUT, self._on_end_readout)
        await self._read_dm_side(config)

    def _open(self, config: OodsConfig, root: Path) -> Stores:
        try:
            root.mkdir(parents=True, exist_ok=True)
            catalog = Catalog(config.catalog_url or sqlite_url(root / "catalog.sqlite"))
        except (OSError, CatalogError) as exc:
            raise ExpectedError(f"cannot open the archive catalog: {exc}") from None
        try:
            registry, consdb = self._open_stores(config, root)
        except (StoreUnavailableError, OSError) as exc:
            catalog.close()
            raise ExpectedError(f"cannot open the repository or ConsDB: {exc}") from None
        registrar = Registrar(catalog, registry, root, self.camera.instrument)
        return Stores(registrar, consdb)

    async def __aenter__(self) -> OodsCsc:
        await super().__aenter__()
        self.keep_running(lambda: self.work.run(self._enabled), "registration")
        self.keep_running(self._report_status, "status")
        return self

    async def close(self) -> None:
        await self.unfollow()
        await self._stop_dm_side()
        await super().close()
        if self.work.stores is not None:
            await asyncio.to_thread(self.work.stores.close)
            self.work.stores = None

    async def end_enable(self, params: NoParams) -> None:
        self.work.wake.set()
        self._reconcile("at enable")
        self.jobs.spawn(self._reconcile_quicklook("at enable"), "quicklook")

    async def state_changed(self, old: State, new: State) -> None:
        """Leaving ENABLED: reconciliations stop (the next enable starts them again);
        what the ledger holds waits. STANDBY: the DM side is no longer read."""
        if old is State.ENABLED:
            await self.jobs.cancel("left ENABLED")
        if new is State.STANDBY:
            await self._stop_dm_side()

    async def _on_connect(self) -> None:
        """After a reconnection, ``imageArchived`` messages may have been missed: the
        catalog says which files those were (the last ``reconnect_look_back`` s of it:
        at ``enable``, all of it)."""
        await super()._on_connect()
        if self.bus.connections > 1 and self.state is State.ENABLED:
            look_back = self.config.reconnect_look_back
            self._reconcile("reconnected", current_tai() - look_back if look_back else -math.inf)

    def _enabled(self) -> bool:
        return self.state is State.ENABLED

    # ---- what is heard -----------------------------------------------------------------

    def _ignore(self, what: str, exc: Exception) -> None:
        self._ignored.warning(self.log, f"ignored an {what}", reason=str(exc))

    def _on_archived(self, message: Parsed[Archived]) -> None:
        if self.state is not State.ENABLED:
            return  # the reconciliation at enable finds it in the catalog
        try:
            image = image_of(self.camera, message.data.imageName)
            sensors = sensors_of(self.camera, message.data.sensor)
        except PromptError as exc:
            self._ignore("imageArchived", exc)
            return
        self._dropped(self.work.ledger.archived(image, sensors, time.monotonic()))
        self.work.wake.set()

    def _on_retrieval_failed(self, message: Parsed[RetrievalFailed]) -> None:
        try:
            image = image_of(self.camera, message.data.imageName)
            sensors = sensors_of(self.camera, message.data.sensor)
        except PromptError as exc:
            self._ignore("imageRetrievalFailed", exc)
            return
        self.work.ledger.retrieval_failed(image, sensors, time.monotonic())
        self.work.wake.set()

    def _on_end_readout(self, message: Parsed[EndReadout]) -> None:
        if self.state is not State.ENABLED or message.retained:
            return
        try:
            image = image_of(self.camera, message.data.imageName)
            sensors = sensors_of(self.camera, message.data.sensors)
        except PromptError as exc:
            self._ignore("endReadout", exc)
            return
        self._dropped(self.work.ledger.read_out(image, sensors, time.monotonic()))

    def _dropped(self, images: list[str]) -> None:
        for image in images:
            self.log.error("too many images held: this one is left to the next "
                           "reconciliation (the catalog has it)", image=image)  # fmt: skip

    # ---- reconciliation ----------------------------------------------------------------

    def _reconcile(self, why: str, since: float = -math.inf) -> None:
        """Walk the catalog from ``since`` (TAI of exposure start; -inf: all of it). One
        walk at a time; asked again while one runs, it runs again, as far back as the
        furthest asked."""
        self._reconcile_since = min(self._reconcile_since, since)
        if self._reconciling is None or self._reconciling.done():
            self._reconciling = self.jobs.spawn(self._reconcile_files(why), "reconcile")

    async def _reconcile_files(self, why: str) -> None:
        """Walk the catalog; a store or the catalog failing on the way: again after a
        back-off, for as long as the CSC is ENABLED (nothing the catalog holds is left
        out because the registry was locked at the wrong moment)."""
        backoff = Backoff(initial=self.config.retry_initial, maximum=self.config.retry_max)
        while self._reconcile_since < math.inf:
            since, self._reconcile_since = self._reconcile_since, math.inf
            stores = self.work.stores
            if stores is None or self.state is not State.ENABLED:
                return
            start = None if since == -math.inf else (since, "", "")
            try:
                compared, missing = await reconcile_files(
                    stores.registrar, self.config.reconcile_page, self._found, start
                )
            except (StoreUnavailableError, CatalogError) as exc:
                delay = backoff.next_delay()
                self.work.counts.last_error = f"reconciliation: {exc}"[:1000]
                self.log.warning("reconciliation failed; tried again", when=why,
                                 reason=str(exc), retry_in=round(delay, 1))  # fmt: skip
                await asyncio.sleep(delay)
                self._reconcile_since = min(self._reconcile_since, since)
            else:
                backoff.reset()
                self.log.info("reconciled with the catalog", when=why, compared=compared,
                              missing=missing)  # fmt: skip

    async def _found(self, image: str, sensors: list[str]) -> None:
        """Hand an image on to the work loop, once it has room (memory stays bounded)."""
        room = max(1, self.config.max_images_held // 2)
        while self.work.ledger.queue_depth >= room:
            self.work.drained.clear()
            await self.work.drained.wait()
        self._dropped(self.work.ledger.found(image, sensors, time.monotonic()))
        self.work.wake.set()

    # ---- the DM side: OCS Batch's QC ---------------------------------------------------

    async def _read_dm_side(self, config: OodsConfig) -> None:
        await self._stop_dm_side()
        self._dm_subscribed = asyncio.Event()
        self._dm_reader = asyncio.create_task(self._read_qc(config), name=f"{self.address}-dm")
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._dm_subscribed.wait()
        except TimeoutError:
            await self._stop_dm_side()
            where = config.dm_broker or self.broker.url
            raise ExpectedError(
                f"the DM side's broker at {where} did not answer within {self.connect_timeout:g} s"
            ) from None

    async def _stop_dm_side(self) -> None:
        reader, self._dm_reader = self._dm_reader, None
        if reader is not None and not reader.done():
            await cancel_and_wait([reader], self.log, "stopping the DM side")

    async def _read_qc(self, config: OodsConfig) -> None:
        """OCS Batch's per-image QC summaries, on a connection of their own (to the CSC's
        broker, or the DM-internal one configured). What was measured while this
        connection was down is caught up from the catalog when it is back."""
        connector = BrokerAddress.from_url(config.dm_broker) if config.dm_broker else self.broker
        bus = connector.transport(on_connect=self._dm_connected, connect_timeout=_FOR_EVER)
        topic = f"{config.dm_prefix}/qc/{self.camera.instrument}/+"
        messages = await bus.subscribe(topic, maxsize=10_000)
        try:
            async with bus:
                self._dm_subscribed.set()
                async for message in messages:
                    self._on_qc(message, config.dm_prefix)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.task_failed("reading the DM side", exc)

    async def _dm_connected(self) -> None:
        if self.state is State.ENABLED:
            self.jobs.spawn(self._reconcile_quicklook("DM side (re)connected"), "quicklook")

    def _on_qc(self, message: Message, prefix: str) -> None:
        if message.retain:
            return
        try:
            image = qc_image(message.topic, prefix, self.camera)
        except PromptError as exc:
            self._ignore("QC summary", exc)
            return
        if self.state is State.ENABLED:
            self.work.quicklook_heard(image)

    async def _reconcile_quicklook(self, why: str) -> None:
        stores = self.work.stores
        if stores is None:
            return
        mark = QuicklookMark(self.state_dir / f"OODS-{self.address.index}-quicklook.json")
        first = (current_tai() - _QC_LOOK_BACK, "")

        async def record(image: str) -> None:
            while len(self.work.quicklook) >= _QC_PAGE:
                self.work.drained.clear()
                await self.work.drained.wait()
            self.work.quicklook_heard(image)

        try:
            done = await reconcile_quicklook(stores.registrar.catalog, self.camera.instrument,
                                             mark, first, _QC_PAGE, record)  # fmt: skip
        except (CatalogError, OSError) as exc:
            self.log.warning("quick-look reconciliation stopped", when=why, reason=str(exc))
            return
        if done:
            self.log.info("quick-look QC caught up from the catalog", when=why, images=done)

    # ---- status ----------------------------------------------------------------------

    def status(self) -> OodsStatus:
        counts = self.work.counts
        return OodsStatus(
            queueDepth=self.work.ledger.queue_depth, registered=counts.registered,
            refusedPending=self.work.ledger.refused_pending,
            consDbPending=len(self.work.consdb_retries), repositoryUp=counts.repository_up,
            lastError=counts.last_error,
        )  # fmt: skip

    async def _report_status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            await self.publish_telemetry(OODS_STATUS, self.status())
