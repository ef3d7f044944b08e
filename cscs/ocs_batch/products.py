"""OCS Batch's products in the archive's Butler repository, where a Butler user finds
them next to the raws: each master bias, dark or flat a calibration dataset certified
in ``{instrument}/calib`` (valid from the start of its first input's exposure, until
the next master of its kind and detector), each measured detector's QC a
``quickLookQc`` dataset (:mod:`cscs.repository.products`).

The catalog is the truth and the repository shows it: a product is registered right
after its job has recorded it in the catalog, from the catalog's row (the QC values as
recorded, the calibration's inputs as recorded), and never at the job's expense. A
registration the repository cannot make now (:class:`~cscs.repository.RepositoryError`:
its database down or locked) is logged and tried again with back-off; at every
``start`` the newest products the catalog holds (at most :data:`RECONCILED_CALIBRATIONS`
and :data:`RECONCILED_QC`) are registered again — registration is idempotent, so what
is there already is left alone, and what a run that died, or a repository that was
down, missed gets there. A product the repository refuses for good
(:class:`~cscs.repository.ProductRefusedError`: it names the cause) is logged as an
error and not tried again. At most :data:`MAX_PENDING` wait; one more and the oldest
is left to the next start's reconciliation (said in the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from cscs.catalog import BatchRecords, CalibrationRecord, Catalog
from cscs.core.backoff import Backoff
from cscs.ocs_batch.shared_repository import RepositoryCalls
from cscs.repository import ProductRefusedError, RepositoryError

__all__ = ["MAX_PENDING", "RECONCILED_CALIBRATIONS", "RECONCILED_QC", "Products", "valid_from"]

MAX_PENDING = 10_000
RECONCILED_CALIBRATIONS = 200  # the newest, at each start
RECONCILED_QC = 2_000  # detectors, the newest measured, at each start (~20 ms each)


@dataclass(frozen=True)
class _Calibration:
    record: CalibrationRecord

    @property
    def key(self) -> tuple[str, ...]:
        return ("calibration", self.record.path)


@dataclass(frozen=True)
class _Qc:
    instrument: str
    image: str
    sensor: str

    @property
    def key(self) -> tuple[str, ...]:
        return ("qc", self.image, self.sensor)


_Product = _Calibration | _Qc


def valid_from(record: CalibrationRecord, catalog: Catalog) -> float:
    """When a master starts to apply: the start of the first exposure it was made of
    (its inputs as the catalog recorded them), or when it was made if none is known."""
    try:
        inputs = json.loads(record.inputs)
        pairs = {(str(name)[:20], record.sensor) for name, *_ in inputs}
    except (ValueError, TypeError):
        pairs = set()
    starts = [row.exposure_start_tai for row in catalog.files_named(pairs)] if pairs else []
    return min(starts) if starts else record.created_tai


class Products:
    def __init__(
        self,
        *,
        repository: Callable[[], RepositoryCalls | None],
        catalog: Callable[[], Catalog | None],
        records: Callable[[], BatchRecords | None],
        log: FilteringBoundLogger,
    ) -> None:
        self._repository = repository
        self._catalog = catalog
        self._records = records
        self._log = log
        self.pending: dict[tuple[str, ...], _Product] = {}
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # nothing waits
        self._drained.set()
        self.registered = 0  # products written or certified now (not those there already)
        self._failing = False  # the last attempt failed: new products queue behind it

    # ---- what the jobs and the start call ----------------------------------------------

    async def calibration(self, record: CalibrationRecord) -> None:
        """Register a master its job has just recorded (tried later if not now)."""
        await self._now(_Calibration(record))

    async def qc(self, instrument: str, image: str, sensor: str) -> None:
        """Register a detector's QC its job has just recorded (tried later if not now)."""
        await self._now(_Qc(instrument, image, sensor))

    async def reconcile(self) -> int:
        """Queue the newest products of the catalog (bounded) to be registered again;
        how many. Idempotent registration leaves those already there alone."""
        records = self._records()
        if records is None:
            return 0
        try:
            calibrations = await asyncio.to_thread(
                records.recent_calibrations, RECONCILED_CALIBRATIONS
            )
            measured = await asyncio.to_thread(records.recent_qc, RECONCILED_QC)
        except Exception as exc:  # the catalog unreadable: the next start tries again
            self._log.warning("cannot read the products to reconcile", error=str(exc))
            return 0
        products: list[_Product] = [_Calibration(record) for record in calibrations]
        products += [_Qc(instrument, image, sensor) for instrument, image, sensor in measured]
        for product in products:
            self._queue(product)
        self._wake.set()
        return len(products)

    async def loop(self) -> None:
        """Registers what waits, oldest first, backing off while the repository fails."""
        backoff = Backoff(initial=1.0, maximum=60.0)
        while True:
            delay = None
            while self.pending:
                product = next(iter(self.pending.values()))
                if await self._register(product):
                    self.pending.pop(product.key, None)
                    backoff.reset()
                    if not self.pending:
                        self._drained.set()
                else:
                    delay = backoff.next_delay()
                    break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def drained(self) -> None:
        """Returns once nothing waits to be registered (at once if nothing does)."""
        await self._drained.wait()

    # ---- registering -------------------------------------------------------------------

    async def _now(self, product: _Product) -> None:
        """Tried at once, unless the repository is failing (then it waits its turn, and
        one outage is not one warning per detector)."""
        if self._failing or not await self._register(product):
            self._queue(product)
            self._wake.set()

    def _queue(self, product: _Product) -> None:
        self.pending.pop(product.key, None)
        if len(self.pending) >= MAX_PENDING:
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            self._log.warning("too many products wait for the repository: the oldest is "
                              "left to the next start", product=" ".join(oldest))  # fmt: skip
        self.pending[product.key] = product
        self._drained.clear()

    async def _register(self, product: _Product) -> bool:
        """True: done (registered, there already, or refused for good and said so);
        False: to be tried again (the repository failed, or is not open)."""
        repository, catalog, records = self._repository(), self._catalog(), self._records()
        if repository is None or catalog is None or records is None:
            return False
        try:
            written = await asyncio.to_thread(_register, product, repository, catalog, records)
            self._failing = False
        except ProductRefusedError as exc:
            self._log.error("the repository refuses a product", product=" ".join(product.key),
                            error=str(exc))  # fmt: skip
            return True
        except Exception as exc:  # RepositoryError, the catalog, a bug: said, tried again
            self._failing = True
            level = self._log.warning if isinstance(exc, RepositoryError) else self._log.error
            level("a product is not in the repository yet; tried again",
                  product=" ".join(product.key), error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            return False
        self.registered += written
        return True


def _register(
    product: _Product, repository: RepositoryCalls, catalog: Catalog, records: BatchRecords
) -> bool:
    """Blocking: one product into the repository, from the catalog's rows; whether
    anything was written."""
    if isinstance(product, _Calibration):
        record = product.record
        registered = repository.register_calibration(
            record.kind, record.instrument, record.sensor, Path(record.path),
            job_id=record.job_id, valid_from_tai=valid_from(record, catalog),
        )  # fmt: skip
        return registered.changed
    metrics: dict[str, Any] | None = records.qc_of(product.image).get(product.sensor)
    if metrics is None:
        raise ProductRefusedError(f"the catalog has no QC of {product.image} {product.sensor}")
    return repository.record_qc(product.instrument, product.image, product.sensor, metrics)
