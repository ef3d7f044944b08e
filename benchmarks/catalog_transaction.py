"""What recording an LSSTCam image's 189 files in the archive catalog costs: one
transaction per file (the old way) against one for the whole image (ADR 0040), on
SQLite and on PostgreSQL, in the same run.

    python -m benchmarks.catalog_transaction [--runs 3] [--images 5] [--postgres URL]

Per image, with fresh rows each time (inserts, as the archiver makes them):

* old: each file's row in its own transaction, then the image's observation row in its
  own (``Catalog.record`` + ``Catalog.record_observation``: what ``ArchiveStore.record``
  did per file with a header): 378 transactions;
* new: the 189 rows and the observation in one (``Catalog.record_all``: what the group
  commit does when the image's sensors finish together);
* groups of 27: seven transactions, as when the three-raft groups of sensors finish
  together (a bound between the two).

Wall and CPU seconds of this process (the client: SQLite runs in it; PostgreSQL's
server CPU is not counted, its wall time is) per image, median over ``--images``, for
each run, then the median and range over runs and the ratios old/new. SQLite is the
catalog's default (WAL, ``synchronous=FULL``: each commit an ``fsync``). PostgreSQL:
a private server of the tests' own (tests/support/postgres.py) unless ``--postgres``
names one; skipped, saying why, without PostgreSQL's programs.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa

from cscs.camera.geometry import Camera
from cscs.catalog import ArchivedFile, Catalog, Observation, sqlite_url
from tests.support.postgres import PostgresMissingError, private_postgres

SENSORS = [d.name for d in Camera.LSSTCAM.detectors]  # 189
WAYS = ("old: one per file", "new: one per image", "groups of 27")


def rows_of(image: str) -> tuple[list[ArchivedFile], Observation]:
    directory = f"/archive/LSSTCam/20261122/{image}"
    rows = [row_of(image, sensor, f"{directory}/{image}_{sensor}.fits") for sensor in SENSORS]
    return rows, Observation(image, "BIAS", "g1", "empty", "", 0.0)


def row_of(image: str, sensor: str, path: str) -> ArchivedFile:
    return ArchivedFile(
        image, sensor, "LSSTCam", "20261122", path, 75_000_000, "0a0b0c0d", "adler32", True,
        "", f"tcp://daq {image}", f"file:///headers/{image}.yaml", "0" * 32, "bench", 1.0,
        2.0, "live",
    )  # fmt: skip


def old_way(catalog: Catalog, image: str) -> None:
    rows, observation = rows_of(image)
    for row in rows:
        catalog.record(row)
        catalog.record_observation(observation)


def new_way(catalog: Catalog, image: str) -> None:
    rows, observation = rows_of(image)
    catalog.record_all(rows, [observation])


def in_groups(catalog: Catalog, image: str, size: int = 27) -> None:
    rows, observation = rows_of(image)
    for start in range(0, len(rows), size):
        catalog.record_all(rows[start : start + size], [observation])


def one_run(url: str, images: int) -> dict[str, tuple[float, float]]:
    """Way -> (wall, CPU) seconds per image, median over ``images``."""
    ways: dict[str, Callable[[Catalog, str], None]] = dict(
        zip(WAYS, (old_way, new_way, in_groups), strict=True)
    )
    catalog = Catalog(url)
    try:
        new_way(catalog, "MC_O_20261122_999999")  # warm: connections, statements
        figures: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
        for n in range(images):
            for way, record in ways.items():  # interleaved: the machine's mood shared
                image = f"MC_O_20261122_{uuid.uuid4().int % 900_000 + n:06d}"
                wall, cpu = time.perf_counter(), time.process_time()
                record(catalog, image)
                figures[way].append((time.perf_counter() - wall, time.process_time() - cpu))
        return {
            way: (statistics.median(w for w, _ in f), statistics.median(c for _, c in f))
            for way, f in figures.items()
        }
    finally:
        catalog.close()


@contextlib.contextmanager
def postgres(url: str) -> Iterator[str | None]:
    """A fresh database on the server ``url`` names, or on a private one; None (said)
    if there is none."""
    with contextlib.ExitStack() as stack:
        if not url:
            try:
                url = str(stack.enter_context(private_postgres()))
            except PostgresMissingError as missing:
                print(f"PostgreSQL skipped: {missing}")
                yield None
                return
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        name = f"cscs_bench_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f"CREATE DATABASE {name}"))
        try:
            yield sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            admin.dispose()


def report(database: str, runs: list[dict[str, tuple[float, float]]]) -> None:
    ms = 1e3
    print(f"\n{database}: {len(SENSORS)} rows per image (per image: wall ms / CPU ms)")
    for n, run in enumerate(runs, 1):
        cells = "; ".join(f"{way} {w * ms:.0f}/{c * ms:.0f}" for way, (w, c) in run.items())
        old, new = run[WAYS[0]], run[WAYS[1]]
        against = f"old/new wall {old[0] / new[0]:.1f}x, CPU {old[1] / new[1]:.1f}x"
        print(f"  run {n}: {cells}; {against}")
    for way in WAYS:
        walls = [run[way][0] * ms for run in runs]
        cpus = [run[way][1] * ms for run in runs]
        print(f"  {way}: wall {statistics.median(walls):.0f} ms ({min(walls):.0f}-"
              f"{max(walls):.0f}), CPU {statistics.median(cpus):.0f} ms ({min(cpus):.0f}-"
              f"{max(cpus):.0f}) per image")  # fmt: skip
    for label, index in (("wall", 0), ("CPU", 1)):
        ratios = [run[WAYS[0]][index] / run[WAYS[1]][index] for run in runs]
        print(f"  old/new {label}: {statistics.median(ratios):.1f}x "
              f"({min(ratios):.1f}-{max(ratios):.1f}) over {len(runs)} runs")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=5, help="images per way and run")
    parser.add_argument("--postgres", default="", help="an administrative database's URL")
    parser.add_argument("--dir", default=None, help="where SQLite's catalogs go")
    args = parser.parse_args()
    sqlite_runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            url = sqlite_url(Path(directory) / "catalog.sqlite")
            sqlite_runs.append(one_run(url, args.images))
    report("SQLite (WAL, synchronous=FULL)", sqlite_runs)
    with postgres(args.postgres) as server:
        if server is not None:
            report("PostgreSQL", [one_run(server, args.images) for _ in range(args.runs)])


if __name__ == "__main__":
    main()
