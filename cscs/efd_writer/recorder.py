"""The writer's pipeline, apart from MQTT: messages in, records to the store or the
spool, each QoS 1 message acknowledged only once its record is durable.

The bus side (:meth:`Recorder.heard`) parses and appends to a bounded queue in memory:
it never waits for the store. When the queue reaches either bound (``queue_capacity``
records, ``queue_bytes`` of payload), the whole queue goes to the spool (fsynced,
split into segments of at most the segment size) and is acknowledged, so memory stays bounded
whatever the store does. The store side (:meth:`Recorder.write_forever`) takes batches
(up to ``batch_size`` records, or what came within ``batch_interval``) and writes them
to the store in a worker thread. While the spool holds anything, new batches go to the
spool behind it, and the spool is replayed into the store oldest segment first, so the
store receives what was heard in the order it was spooled. A store that fails is
retried after a jittered back-off, and meanwhile everything goes to the spool.

Only a spool that cannot be written (a full disk) stops it: :class:`SpoolUnwritableError`,
with nothing acknowledged that is not kept (the broker sends it again).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from cscs.core.backoff import Backoff
from cscs.core.logs import Throttle
from cscs.core.tai import current_tai
from cscs.core.transport import Message
from cscs.efd.records import EfdRecord
from cscs.efd.store import EfdRefusedError, EfdStore
from cscs.efd_writer.dead_letter import DeadLetters
from cscs.efd_writer.parse import FLAG_FIELD, Refused, to_record
from cscs.efd_writer.spool import Spool

__all__ = ["Limits", "Recorder", "SpoolUnwritableError"]

_ERROR_TEXT = 500  # characters of a store's error kept for the status


class SpoolUnwritableError(Exception):
    """The spool refused an append: nothing more can be kept."""


@dataclass(frozen=True)
class Limits:
    prefix: str = "obs"
    dm_prefix: str = "dm"
    batch_size: int = 1000
    batch_interval: float = 0.5
    queue_capacity: int = 20_000
    queue_bytes: int = 64 * 2**20
    max_message_bytes: int = 1_048_576
    retry_max: float = 30.0


Ack = Callable[[], None]


class Recorder:
    def __init__(
        self,
        open_store: Callable[[], EfdStore],
        spool: Spool,
        limits: Limits,
        log: FilteringBoundLogger,
        *,
        changed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = current_tai,
        store_url: str = "",
    ) -> None:
        self.store_url = store_url  # for logs and the status: no secrets
        self._open_store = open_store
        self._store: EfdStore | None = None
        self.spool = spool
        self.limits = limits
        self.log = log
        self._changed = changed  # the store went down or up: say so now
        self._clock = clock
        self.counts: Counter[str] = Counter()  # received, refused, flagged, written, spooled
        self.store_up = True
        self.last_error = ""
        self._queue: deque[tuple[EfdRecord, Ack]] = deque()
        self._sizes: deque[int] = deque()  # each queued message's payload bytes, in step
        #: Payload bytes of the queued messages: bounded by ``limits.queue_bytes``.
        self.queued_bytes = 0
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._spilling = asyncio.Lock()  # one spool append at a time from this loop
        self._backoff = Backoff(initial=0.5, maximum=limits.retry_max)
        self._retry_at = 0.0  # monotonic
        #: Set whenever records reach the store or the spool (for whoever waits on it).
        self.progressed = asyncio.Event()
        self._refusals = Throttle(10.0)
        self._flags = Throttle(10.0)
        self._store_refusals = Throttle(10.0)
        #: Records the store refused for good, set aside (bounded) so the rest goes on.
        self.dead_letters = DeadLetters(spool.directory / "refused")

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ---- the bus side ------------------------------------------------------------------

    async def heard(self, message: Message) -> None:
        """One message from the bus: its record queued (acknowledged once durable), or
        refused (acknowledged at once: there is nothing to keep)."""
        limits = self.limits
        record = to_record(
            message.topic, message.payload, prefix=limits.prefix, dm_prefix=limits.dm_prefix,
            received_tai=self._clock(), max_bytes=limits.max_message_bytes,
        )  # fmt: skip
        if isinstance(record, Refused):
            self.counts["refused"] += 1
            refused = self.counts["refused"]
            self._refusals.warning(self.log, "not recorded", topic=message.topic[:200],
                                   reason=record.reason, refused=refused)  # fmt: skip
            message.ack()
            return
        self.counts["received"] += 1
        if FLAG_FIELD in record.fields:
            self.counts["flagged"] += 1
            self._flags.warning(self.log, "recorded with a flag", topic=message.topic[:200],
                                flag=record.fields[FLAG_FIELD])  # fmt: skip
        if self._queue and self.queued_bytes + len(message.payload) > limits.queue_bytes:
            await self._spill()  # large messages: the byte bound comes before the count
        self._queue.append((record, message.ack))
        self._sizes.append(len(message.payload))
        self.queued_bytes += len(message.payload)
        self._arrived.set()
        if len(self._queue) >= limits.batch_size:
            self._full.set()
        if len(self._queue) >= limits.queue_capacity or self.queued_bytes >= limits.queue_bytes:
            await self._spill()

    async def _spill(self) -> None:
        """The queue is at its bound (the store is slow or down): all of it to the
        spool at once, acknowledged once there."""
        async with self._spilling:
            taken = list(self._queue)
            self._clear_queue()
            self._full.clear()
            if taken:
                await self._to_spool(taken)

    def _clear_queue(self) -> None:
        self._queue.clear()
        self._sizes.clear()
        self.queued_bytes = 0

    # ---- the store side ----------------------------------------------------------------

    async def write_forever(self) -> None:
        while True:
            batch = await self.next_batch()
            await self.write_batch(batch)

    async def next_batch(self) -> list[tuple[EfdRecord, Ack]]:
        """Up to ``batch_size`` queued records: at once when that many wait, else what
        came within ``batch_interval`` of the first; [] when the spool is due a replay."""
        limits = self.limits
        while not self._queue:
            if not self.spool.empty and self._may_try():
                return []
            self._arrived.clear()
            wait = None if self.spool.empty else max(0.0, self._retry_at - time.monotonic())
            try:
                async with asyncio.timeout(wait):
                    await self._arrived.wait()
            except TimeoutError:
                continue
        if len(self._queue) < limits.batch_size:
            self._full.clear()
            try:
                async with asyncio.timeout(limits.batch_interval):
                    await self._full.wait()
            except TimeoutError:
                pass
        count = min(len(self._queue), limits.batch_size)
        batch = [self._queue.popleft() for _ in range(count)]
        for _ in range(count):
            self.queued_bytes -= self._sizes.popleft()
        if len(self._queue) < limits.batch_size:
            self._full.clear()
        return batch

    async def write_batch(self, batch: list[tuple[EfdRecord, Ack]], *, replay: bool = True) -> None:
        """One batch to the store (when nothing older waits in the spool and the store
        may be tried), else to the spool; then a replay step if the store may be tried."""
        direct = batch and self.spool.empty and self._may_try()
        if direct and await self._write([r for r, _ in batch]):
            for _, ack in batch:
                ack()
            return
        if batch:
            async with self._spilling:
                await self._to_spool(batch)
        if replay and not self.spool.empty and self._may_try():
            await self._replay_one()

    async def _replay_one(self) -> None:
        """The oldest spool segment into the store; removed once all of it is there."""
        segment = await asyncio.to_thread(self.spool.oldest)
        if segment is None:
            return
        if segment.torn:
            self.log.warning("spool lines unreadable, skipped (never acknowledged)",
                             segment=str(segment.path), lines=segment.torn)  # fmt: skip
        size = self.limits.batch_size
        for start in range(0, len(segment.records), size):
            if not await self._write(segment.records[start : start + size]):
                return  # the segment stays; what was written is written again later
        await asyncio.to_thread(self.spool.remove, segment)
        self.counts["replayed"] += len(segment.records)
        self.progressed.set()
        self.log.info("spool segment replayed", records=len(segment.records),
                      spool_bytes=self.spool.bytes)  # fmt: skip

    async def _write(self, records: list[EfdRecord]) -> bool:
        """True once the store has ``records`` (or has refused some of them for good,
        those set aside); False (the store marked down, the next try put off) when it
        fails otherwise."""
        try:
            if self._store is None:
                self._store = await asyncio.to_thread(self._open_store)
            await asyncio.to_thread(self._store.write, records)
        except EfdRefusedError as exc:
            if len(records) == 1:
                await self._set_aside(records[0], exc)
                return True
            # Bisect: the halves written apart find the records refused; what is written
            # twice on a later retry lands on itself (the stores are idempotent).
            half = len(records) // 2
            return await self._write(records[:half]) and await self._write(records[half:])
        except Exception as exc:  # a store's failure, whichever library raised it
            self._store_down(exc)
            return False
        self.counts["written"] += len(records)
        self.progressed.set()
        if not self.store_up:
            self.store_up, self.last_error = True, ""
            self._backoff.reset()
            self.log.info("the EFD store answers again", store=self.store_url)
            self._changed()
        return True

    async def _set_aside(self, record: EfdRecord, exc: EfdRefusedError) -> None:
        """A record the store refused for good: to the dead-letter file (while it has
        room), counted, logged (throttled); the spool goes on behind it."""
        try:
            kept = await asyncio.to_thread(self.dead_letters.keep, [record])
        except OSError as error:
            raise SpoolUnwritableError(
                f"the dead-letter file {self.dead_letters.path} cannot be written ({error})"
            ) from error
        self.counts["store_refused"] += 1
        self._store_refusals.warning(
            self.log, "the EFD store refused a record for good; set aside",
            measurement=str(record.measurement)[:200], seq=record.seq,
            error=str(exc)[:_ERROR_TEXT], kept=bool(kept),
            store_refused=self.counts["store_refused"],
        )  # fmt: skip

    def _store_down(self, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT]
        delay = self._backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        was_up, self.store_up, self.last_error = self.store_up, False, error
        if was_up:
            self.log.warning("the EFD store failed; spooling", store=self.store_url,
                             error=error, retry_in=round(delay, 2))  # fmt: skip
            self._changed()
        if self._store is not None and not was_up:
            # Failing again: a fresh connection next time (a restarted server).
            self._close_store()

    def _may_try(self) -> bool:
        return self.store_up or time.monotonic() >= self._retry_at

    async def _to_spool(self, batch: list[tuple[EfdRecord, Ack]]) -> None:
        try:
            await asyncio.to_thread(self.spool.append, [r for r, _ in batch])
        except OSError as exc:
            raise SpoolUnwritableError(
                f"the spool at {self.spool.directory} cannot be written ({exc.strerror or exc})"
            ) from exc
        self.counts["spooled"] += len(batch)
        self.progressed.set()
        for _, ack in batch:
            ack()

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:  # closing a broken store: nothing more to lose
                self.log.debug("closing the store failed", error=repr(exc))

    async def close(self) -> None:
        """Flush what is queued (to the store or the spool), then close the store."""
        if self._queue:
            batch = list(self._queue)
            self._clear_queue()
            try:
                await self.write_batch(batch, replay=False)
            except SpoolUnwritableError as exc:
                self.log.error("queued records not kept at close; the broker keeps the "
                               "QoS 1 ones", error=str(exc), records=len(batch))  # fmt: skip
        await asyncio.to_thread(self._close_store)
