"""``EfdWriter:0``: everything said on the bus, recorded in the EFD (docs/efd.md).

From ``start`` to ``standby`` it reads every event, telemetry sample, command and ack
under the CSCs' prefix, and the DM-internal topics, on a connection of its own with a
session the broker keeps (a fixed client id, a persistent session, manual
acknowledgement): while the writer is away (restarted, in STANDBY) the broker keeps
the QoS 1 messages for it. Each message becomes an EFD record (:mod:`.parse`), goes
through the :class:`~cscs.efd_writer.recorder.Recorder` to the store or the durable
spool (:mod:`.spool`), and is acknowledged to the broker only then: a SIGKILL at any
moment loses nothing the broker sent at QoS 1. Telemetry is QoS 0 (ICD): what is
published while no writer runs is lost, which is why a site runs two (docs/efd.md).

``efdWriterStatus`` says what was recorded, spooled and written, and whether the store
answers. FAULT only when nothing can be kept: the spool cannot be written.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.states import State
from cscs.core.tasks import cancel_and_wait
from cscs.core.transport import Subscription
from cscs.efd.open import open_store
from cscs.efd.store import EfdStore
from cscs.efd_writer.interface import (
    CONFIG_DIR,
    EFD_WRITER_STATUS,
    ERROR_SPOOL_UNWRITABLE,
    INTERFACE,
    EfdWriterConfig,
    EfdWriterStatus,
)
from cscs.efd_writer.recorder import Limits, Recorder, SpoolUnwritableError
from cscs.efd_writer.spool import Spool

__all__ = ["EfdWriterCsc", "public_url"]

_FOR_EVER = 365 * 86400.0  # s
_SUBSCRIPTION = 10_000  # messages a filter's reader may fall behind; then left at the broker


def public_url(url: str) -> str:
    """``url`` without credentials (``//user:password@`` and query strings removed)."""
    return re.sub(r"//[^/@\s]*@", "//", url).split("?", 1)[0][:500]


class EfdWriterCsc(BaseCsc[EfdWriterConfig]):
    interface = INTERFACE
    config_schema = EfdWriterConfig
    default_config_dir: ClassVar[Path | None] = CONFIG_DIR

    def __init__(
        self, index: int = 0, *, store: Callable[[], EfdStore] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(index, **kwargs)
        #: How the store is opened: the URL ``CSCS_EFD`` names, unless a test gives one.
        self._open_store = store or (lambda: open_store(self.settings.efd))
        self.store_url = public_url(self.settings.efd) if store is None else "(given)"
        self.spool_dir = self.state_dir / f"efd-spool-{self.address.index}"
        self.recorder: Recorder | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._status_changed = asyncio.Event()
        self._last_status: EfdWriterStatus | None = None

    # ---- life ------------------------------------------------------------------------

    async def configure(self, config: EfdWriterConfig) -> None:
        """Read the bus with this configuration: the previous reading (if any) flushed
        and stopped first. ``start`` is done once the broker has the session."""
        await self._stop_recording()
        try:
            spool = await asyncio.to_thread(Spool, self.spool_dir, config.spool_segment_bytes)
        except OSError as exc:
            raise ExpectedError(f"cannot open the EFD spool at {self.spool_dir}: {exc}") from None
        limits = Limits(
            prefix=self.address.prefix, dm_prefix=config.dm_prefix,
            batch_size=config.batch_size, batch_interval=config.batch_interval,
            queue_capacity=config.queue_capacity, queue_bytes=config.queue_bytes,
            max_message_bytes=config.max_message_bytes,
            retry_max=config.retry_max,
        )  # fmt: skip
        recorder = Recorder(self._open_store, spool, limits, self.log,
                            changed=self._status_changed.set, store_url=self.store_url)  # fmt: skip
        self.recorder = recorder
        self._subscribed = asyncio.Event()
        self._reader = asyncio.create_task(self._record(recorder), name=f"{self.address}-record")
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._subscribed.wait()
        except TimeoutError:
            await self._stop_recording()
            raise ExpectedError(
                f"the broker at {self.broker.url} did not answer within {self.connect_timeout:g} s"
            ) from None
        self._status_changed.set()

    async def state_changed(self, old: State, new: State) -> None:
        """STANDBY: stop reading (the broker keeps the QoS 1 messages for the session)."""
        if new is State.STANDBY:
            await self._stop_recording()

    async def __aenter__(self) -> EfdWriterCsc:
        await super().__aenter__()
        self.keep_running(self._report_status, "status")
        return self

    async def close(self) -> None:
        await self._stop_recording()
        await super().close()

    # ---- recording -------------------------------------------------------------------

    def _filters(self, recorder: Recorder) -> list[str]:
        """What is recorded. The events come last: they are where retained messages
        are, and a broker may hold the next SUBSCRIBE until those it sends on one are
        acknowledged (amqtt does, for seconds), which the writer does only once they
        are durable, after the connection is made."""
        prefix, dm = recorder.limits.prefix, recorder.limits.dm_prefix
        return [f"{dm}/qc/#", f"{dm}/status/+", f"{prefix}/+/+/cmd/+", f"{prefix}/+/+/ack",
                f"{prefix}/+/+/tel/+", f"{prefix}/+/+/evt/+"]  # fmt: skip

    async def _record(self, recorder: Recorder) -> None:
        """Read and record until cancelled. The connection's session outlives the
        process (the same client id every time): what the broker kept comes at once."""
        bus = self.broker.transport(
            client_id=f"{self.address.root.replace('/', '-')}-efd",
            persistent_session=True,
            manual_ack=True,
            connect_timeout=_FOR_EVER,  # `start` says when it has waited long enough
        )
        # Subscribed before connecting: what the broker kept must find a reader.
        subscriptions = [
            await bus.subscribe(f, qos=1, maxsize=_SUBSCRIPTION) for f in self._filters(recorder)
        ]
        try:
            async with bus:
                self._subscribed.set()
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(recorder.write_forever())
                        for subscription in subscriptions:
                            group.create_task(self._read(subscription, recorder))
                finally:
                    # What is queued is kept (store or spool), and acknowledged, before
                    # the session is left; what is not is sent again next time.
                    await asyncio.shield(recorder.close())
        except* SpoolUnwritableError as failed:
            await self._nothing_kept(failed.exceptions[0])
        except* Exception as failed:
            await self.task_failed("recording", failed.exceptions[0])

    async def _read(self, messages: Subscription, recorder: Recorder) -> None:
        async for message in messages:
            await recorder.heard(message)

    async def _nothing_kept(self, exc: BaseException) -> None:
        self._status_changed.set()
        report = (f"{exc}, and the EFD store {self.store_url} "
                  f"{'is down' if self.recorder and not self.recorder.store_up else 'is too slow'}"
                  ": nothing heard can be kept; the broker keeps the QoS 1 messages "
                  "not acknowledged until the writer is started again")  # fmt: skip
        await self.fault(ERROR_SPOOL_UNWRITABLE, report)

    async def _stop_recording(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            await cancel_and_wait([reader], self.log, "stopping the recording")

    # ---- status ----------------------------------------------------------------------

    def status(self) -> EfdWriterStatus:
        r = self.recorder
        counts = r.counts if r is not None else {}
        return EfdWriterStatus(
            received=counts.get("received", 0),
            written=counts.get("written", 0),
            spooled=counts.get("spooled", 0),
            spoolBytes=r.spool.bytes if r is not None else 0,
            refused=counts.get("refused", 0),
            storeRefused=counts.get("store_refused", 0),
            storeUrl=self.store_url,
            storeUp=r.store_up if r is not None else True,
            lastError=r.last_error if r is not None else "",
        )

    async def _report_status(self) -> None:
        """``efdWriterStatus`` every ``status_interval`` s when something changed, and at
        once when the store goes down or up."""
        while True:
            try:
                async with asyncio.timeout(self.config.status_interval):
                    await self._status_changed.wait()
            except TimeoutError:
                pass
            self._status_changed.clear()
            status = self.status()
            if status != self._last_status:
                self._last_status = status
                await self.publish_event(EFD_WRITER_STATUS, status, wait=0.0)
