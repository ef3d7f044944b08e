"""The archive as a Data Butler repository: its root holds ``butler.yaml`` and (by
default) the SQLite registry ``butler.sqlite3``, so ``butler query-datasets ROOT raw``
works on it. Raws are registered where the archiver wrote them (``transfer="direct"``:
the archive already keeps them; a copy would double the disk), in RUN collection
``{instrument}/raw/all``, as the observatory's OODS does.

Blocking; async callers use ``asyncio.to_thread``. One :class:`Repository` per thread
at a time (a Butler is not shared between threads here).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsst.daf.butler import (
    Butler,
    Config,
    DataCoordinate,
    DatasetRef,
    DatasetType,
    FileDataset,
)
from lsst.daf.butler.registry.interfaces import SchemaAlreadyDefinedError

from cscs.camera.data_ids import INSTRUMENTS, exposure_id
from cscs.camera.naming import ImageName
from cscs.repository.config import STORAGE_CLASS, seed_config
from cscs.repository.errors import RepositoryError, failures_are_repository_errors
from cscs.repository.headers import read_header_values, read_primary_header
from cscs.repository.postgres import prepare_postgres
from cscs.repository.products import (
    CALIBRATION_KINDS,
    RegisteredCalibration,
    calibration_dataset_type,
    certify_calibration,
    check_calibration,
    put_qc,
    qc_data_id,
    qc_dataset_type,
    qc_values,
)
from cscs.repository.query import RawRef, query_raws, raw_instruments
from cscs.repository.records import (
    RawRecords,
    detector_records,
    instrument_record,
    raw_records,
)

__all__ = [
    "RAW",
    "RawRef",
    "RegisteredFile",
    "Registration",
    "Repository",
    "raw_run",
    "read_primary_header",
]

RAW = "raw"
RAW_DIMENSIONS = ("instrument", "detector", "exposure")
_LOCK = ".butler.lock"
_CHUNK = 500  # exposures per query when reconciling


def raw_run(instrument: str) -> str:
    """The RUN collection of ``instrument``'s raws."""
    return f"{instrument}/raw/all"


@dataclass(frozen=True)
class RegisteredFile:
    """A file in the repository after :meth:`Repository.register`; ``changed``: this call
    added it or updated its records (False: it was there as it is)."""

    path: Path
    image_name: str
    sensor: str
    instrument: str
    exposure_id: int
    detector: int
    changed: bool


@dataclass
class Registration:
    """What one :meth:`Repository.register` did: the files in the repository, and those
    refused until they change (``(path, reason)``, the reason naming the cause)."""

    registered: list[RegisteredFile] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Only one process at a time creates the repository (two may open it at once)."""
    with (root / _LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Repository:
    """The archive's Butler repository (:meth:`open`)."""

    def __init__(self, butler: Butler, root: Path) -> None:
        self.butler = butler
        self.root = root
        self._instruments: set[str] = set()

    @classmethod
    def open(
        cls, archive_root: Path, registry_url: str = "", *, namespace: str = "cscs"
    ) -> Repository:
        """The repository in ``archive_root``, created if absent: SQLite in the archive
        if ``registry_url`` is empty, else that PostgreSQL database, the tables in schema
        ``namespace`` (so that several repositories share one database). An existing
        repository keeps the registry it was made with. RepositoryError naming the
        cause if it cannot be opened or made."""
        root = Path(archive_root).absolute()
        with failures_are_repository_errors(f"cannot open the repository in {root}"):
            root.mkdir(parents=True, exist_ok=True)
            with _locked(root):
                if not (root / "butler.yaml").exists():
                    _make(root, registry_url, namespace)
            butler = Butler.from_config(str(root), writeable=True)
            registry = butler.registry
            registry.registerDatasetType(
                DatasetType(RAW, RAW_DIMENSIONS, STORAGE_CLASS, universe=butler.dimensions)
            )
            for kind in CALIBRATION_KINDS:
                registry.registerDatasetType(calibration_dataset_type(butler, kind))
            registry.registerDatasetType(qc_dataset_type(butler))
        return cls(butler, root)

    def close(self) -> None:
        self.butler.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- registering raws -----------------------------------------------------------------

    def register(self, paths: Sequence[Path]) -> Registration:
        """Register ``paths`` (usually the files of one image), each described by its
        own primary header: the dimension records and the datasets in one transaction.
        A file already registered is not a second dataset; one rewritten since (its
        header completed) updates the records. A file that cannot be registered as it
        is goes to ``refused`` with the reason; RepositoryError if the repository
        itself failed (nothing of this call is kept then)."""
        result = Registration()
        described: list[tuple[Path, RawRecords]] = []
        for given in paths:
            path = Path(given).absolute()
            try:
                described.append((path, raw_records(read_header_values(path))))
            except (ValueError, OSError) as exc:  # BadHeaderError, a value astropy cannot read
                result.refused.append((path, str(exc)[:300]))
        if not described:
            return result
        with failures_are_repository_errors("cannot register raws"):
            for instrument in {records.instrument for _, records in described}:
                self._ensure_instrument(instrument)
            new, known = self._split_known(described, result)
            with self.butler.transaction():
                updated = self._sync_observations([records for _, records in new + known])
                if new:
                    raw = self.butler.get_dataset_type(RAW)
                    self.butler.ingest(*[_file_dataset(self.butler, raw, path, records)
                                         for path, records in new],
                                       transfer="direct", record_validation_info=False)  # fmt: skip
        for path, records in new:
            result.registered.append(_registered(path, records, changed=True))
        for path, records in known:
            changed = records.exposure_id in updated
            result.registered.append(_registered(path, records, changed=changed))
        return result

    def _ensure_instrument(self, instrument: str) -> None:
        """The instrument and every one of its detectors, once per process."""
        if instrument in self._instruments:
            return
        registry = self.butler.registry
        with registry.transaction():
            registry.syncDimensionData("instrument", instrument_record(instrument), update=True)
            for record in detector_records(instrument):
                registry.syncDimensionData("detector", record, update=True)
        self.butler.collections.register(raw_run(instrument))
        self._instruments.add(instrument)

    def _split_known(
        self, described: list[tuple[Path, RawRecords]], result: Registration
    ) -> tuple[list[tuple[Path, RawRecords]], list[tuple[Path, RawRecords]]]:
        """Files not yet in the repository, and those already there (same data ID, same
        path); a data ID registered from another path, or given twice, is refused."""
        new: list[tuple[Path, RawRecords]] = []
        known: list[tuple[Path, RawRecords]] = []
        seen: dict[tuple[str, int, int], Path] = {}
        exposures: dict[str, set[int]] = {}
        for _, records in described:
            exposures.setdefault(records.instrument, set()).add(records.exposure_id)
        registered = {
            (instrument, number, detector): where
            for instrument, numbers in exposures.items()
            for (number, detector), where in self._raw_paths(instrument, sorted(numbers)).items()
        }
        for path, records in described:
            key = (records.instrument, records.exposure_id, records.detector)
            if key in seen:
                result.refused.append(
                    (path, f"{records.image_name} {records.sensor} is also in {seen[key]}")
                )
                continue
            seen[key] = path
            where = registered.get(key)
            if where is None:
                new.append((path, records))
            elif where.resolve() == path.resolve():
                known.append((path, records))
            else:
                result.refused.append(
                    (path, f"{records.image_name} {records.sensor} is registered from {where}")
                )
        return new, known

    def _sync_observations(self, described: Sequence[RawRecords]) -> set[int]:
        """The filter, day, group and exposure records of ``described``, inserted or
        updated; the exposures whose records changed. Files of one image carry the same
        observation: the most complete header of the call speaks for it."""
        registry = self.butler.registry
        best: dict[int, RawRecords] = {}
        for records in described:
            held = best.get(records.exposure_id)
            if held is None or _known_values(records) > _known_values(held):
                best[records.exposure_id] = records
        changed: set[int] = set()
        for number, records in best.items():
            registry.syncDimensionData("physical_filter", records.physical_filter, update=True)
            registry.syncDimensionData("day_obs", records.day_obs)
            registry.syncDimensionData("group", records.group)
            if registry.syncDimensionData("exposure", records.exposure, update=True):
                changed.add(number)
        return changed

    # ---- what is there ---------------------------------------------------------------------

    def registered(self, paths: Iterable[Path]) -> set[Path]:
        """Which of ``paths`` are registered (as given, absolute): for reconciling the
        archive's catalog with the repository. A path whose name is not an archived
        file's (``{image}_{RXX}_{SXX}.fits``) is not."""
        wanted: dict[str, dict[int, list[Path]]] = {}
        for given in paths:
            path = Path(given).absolute()
            image = path.name[:20]
            try:
                name = ImageName.parse(image)
                number = exposure_id(image)
            except ValueError:
                continue
            instrument = INSTRUMENTS[name.code]
            wanted.setdefault(instrument, {}).setdefault(number, []).append(path)
        found: set[Path] = set()
        with failures_are_repository_errors("cannot read the repository"):
            self._see_other_processes()
            for instrument, by_exposure in wanted.items():
                if instrument not in raw_instruments(self.butler):
                    continue
                numbers = sorted(by_exposure)
                for start in range(0, len(numbers), _CHUNK):
                    chunk = numbers[start : start + _CHUNK]
                    candidates = {p for n in chunk for p in by_exposure[n]}
                    found |= candidates & self._paths_of(instrument, chunk)
        return found

    def _paths_of(self, instrument: str, exposures: list[int]) -> set[Path]:
        return set(self._raw_paths(instrument, exposures).values())

    def _raw_paths(self, instrument: str, exposures: list[int]) -> dict[tuple[int, int], Path]:
        """Where ``instrument``'s raws of ``exposures`` are, by (exposure, detector): one
        query and one look-up of the locations for them all (a query per file cost
        ~25 ms each, most of the time of registering an image)."""
        refs = self.butler.query_datasets(
            RAW, collections=raw_run(instrument), find_first=False, explain=False, limit=None,
            where="instrument = inst AND exposure IN (exposures)",
            bind={"inst": instrument, "exposures": exposures},
        )  # fmt: skip
        if not refs:
            return {}
        paths: dict[tuple[int, int], Path] = {}
        for ref, uris in self.butler.get_many_uris(refs).items():
            if uris.primaryURI is not None:  # a raw is one file: it has one
                data_id = ref.dataId.required
                paths[int(data_id["exposure"]), int(data_id["detector"])] = Path(
                    uris.primaryURI.ospath
                )
        return paths

    def query_raws(
        self, where: str, *, bind: Mapping[str, object] | None = None, limit: int
    ) -> list[RawRef]:
        """The raws ``where`` (a Butler expression, with ``bind`` values) selects, in
        every instrument's ``*/raw/all``, oldest first. QueryRefusedError naming what is
        wrong (syntax, an unknown dimension, more than ``limit`` results);
        RepositoryError if the repository failed."""
        with failures_are_repository_errors("cannot read the repository"):
            self._see_other_processes()
        return query_raws(self.butler, where, bind=bind, limit=limit)

    def _see_other_processes(self) -> None:
        """Forget what this Butler cached of the registry (instruments, detectors,
        filters, collections, dataset types): another process (the OODS of another
        camera) may have added some since, and a stale cache says "no such instrument"
        for ever. Cheap: the caches are read again only as they are used (~1 ms)."""
        self.butler.registry.refresh()

    # ---- OCS Batch's products -------------------------------------------------------------

    def register_calibration(
        self, kind: str, instrument: str, sensor: str, path: Path, *, job_id: str,
        valid_from_tai: float,
    ) -> RegisteredCalibration:  # fmt: skip
        """Master ``kind`` (bias, dark, flat) of ``instrument``'s ``sensor``, the file
        ``path`` OCS Batch's job ``job_id`` wrote, ingested in place into RUN
        ``{instrument}/calib/{job_id}`` and certified in ``{instrument}/calib`` from
        ``valid_from_tai`` (see :mod:`cscs.repository.products`). Idempotent.
        ProductRefusedError for bad input; RepositoryError if the repository failed
        (nothing of this call is kept then)."""
        detector, absolute = check_calibration(kind, instrument, sensor, path, job_id,
                                               valid_from_tai)  # fmt: skip
        with failures_are_repository_errors(f"cannot register the {kind} of {sensor}"):
            self._ensure_instrument(instrument)
            with self.butler.transaction():
                return certify_calibration(self.butler, kind, instrument, sensor, absolute,
                                           detector=detector, job_id=job_id,
                                           valid_from_tai=valid_from_tai)  # fmt: skip

    def record_qc(
        self, instrument: str, image_name: str, sensor: str, metrics: Mapping[str, Any]
    ) -> bool:
        """``metrics`` (name → number, text, boolean or None) as the ``quickLookQc``
        dataset of the image's detector, in RUN ``{instrument}/runs/quickLookQc``;
        True if written, False if it held these values already (a re-measure with
        other values replaces them). The image must be registered (its raws).
        ProductRefusedError for bad input; RepositoryError if the repository failed."""
        data_id = qc_data_id(instrument, image_name, sensor)
        values = qc_values(metrics)
        with failures_are_repository_errors(f"cannot record the QC of {image_name} {sensor}"):
            self._see_other_processes()
            return put_qc(self.butler, data_id, values, image_name)


def _make(root: Path, registry_url: str, namespace: str) -> None:
    """A new repository in ``root``; its registry in ``registry_url``'s ``namespace``,
    which must not hold another repository's (the tables of two archives in one schema
    would mix their files)."""
    if registry_url:
        prepare_postgres(registry_url)
    try:
        Butler.makeRepo(str(root), config=Config(seed_config(registry_url, namespace)),
                        forceConfigRoot=False)  # fmt: skip
    except SchemaAlreadyDefinedError:
        (root / "butler.yaml").unlink(missing_ok=True)
        raise RepositoryError(
            f"the registry's namespace {namespace!r} already holds another repository: "
            "give this archive a namespace of its own"
        ) from None


def _file_dataset(
    butler: Butler, dataset_type: DatasetType, path: Path, records: RawRecords
) -> FileDataset:
    data_id = DataCoordinate.standardize(records.data_id, universe=butler.dimensions)
    ref = DatasetRef(dataset_type, data_id, run=raw_run(records.instrument))
    return FileDataset(path=str(path), refs=[ref])


def _known_values(records: RawRecords) -> int:
    return sum(value is not None for value in records.exposure.values())


def _registered(path: Path, records: RawRecords, *, changed: bool) -> RegisteredFile:
    return RegisteredFile(path, records.image_name, records.sensor, records.instrument,
                          records.exposure_id, records.detector, changed)  # fmt: skip
