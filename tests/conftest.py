"""Test fixtures: the bus each CSC test runs on, fresh CSC indices, and a guard that fails
any test leaving asyncio tasks behind.

Three tiers (docs/testing.md). The offline tier (``make test-fast``) starts nothing: no
process, no broker, no cluster; a guard below fails any unmarked test that tries. The
system tier (marked ``broker``) has real brokers, CSCs as processes and Dask clusters;
with the offline tier it is ``make test``. The long tier (marked ``long``: whole nights,
the soak) is ``make test-long``; ``.ci/run`` runs all three. ``broker`` runs a test on
the in-memory bus and on both real brokers, the embedded amqtt and Mosquitto;
``real_broker`` on the real brokers only, for what is about the broker itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing.util
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from cscs.camera.memory import keep_freed_memory
from cscs.catalog import sqlite_url
from cscs.core.broker import Backend, EmbeddedBroker, find_mosquitto
from cscs.core.testing import MemoryBroker
from cscs.core.transport import Connector
from cscs.efd.open import open_store
from cscs.efd.store import EfdStore
from sim.site.influxd import InfluxMissingError, InfluxServer, private_influx
from tests.support.postgres import PostgresMissingError, private_postgres
from tests.support.process_site import ProcessSite, process_site


def pytest_configure(config: pytest.Config) -> None:
    """The test process keeps freed memory as a CSC process does (``cscs run``): the
    offline tier runs CSCs in it, and each full-CCD array it frees would otherwise go back
    to the kernel and come again as fresh, zeroed pages (a fifth of the tier's system
    time). Child processes start their own way, as at a site."""
    keep_freed_memory()


settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

_MOSQUITTO_MISSING = "mosquitto is not installed (apt-get install mosquitto); .ci/run installs it"
_NO_MOSQUITTO = pytest.mark.skipif(find_mosquitto() is None, reason=_MOSQUITTO_MISSING)
REAL_BROKERS = [
    pytest.param("amqtt", marks=pytest.mark.broker),
    pytest.param("mosquitto", marks=[pytest.mark.broker, _NO_MOSQUITTO]),
]
# Where the broker is not the subject, one real broker is enough: the one sites run, or
# the embedded amqtt where Mosquitto is not installed (docs/testing.md).
SITE_BROKER = [pytest.param("mosquitto" if find_mosquitto() else "amqtt", marks=pytest.mark.broker)]
BUSES = [pytest.param("memory"), *SITE_BROKER]
EVERY_BUS = [pytest.param("memory"), *REAL_BROKERS]


@pytest_asyncio.fixture(scope="session")
async def _embedded() -> AsyncIterator[dict[str, EmbeddedBroker]]:
    """Real brokers, each started the first time a test asks for it and shared by the
    rest of the session (tests use fresh CSC indices, so retained messages never cross)."""
    running: dict[str, EmbeddedBroker] = {}
    yield running
    for broker in running.values():
        await broker.__aexit__(None, None, None)


# Tasks that belong to the session's brokers, not to the test that happened to start them.
_session_tasks: set[asyncio.Task[object]] = set()


async def _started(backend: str, running: dict[str, EmbeddedBroker]) -> EmbeddedBroker:
    if backend not in running:
        kind: Backend = "mosquitto" if backend == "mosquitto" else "amqtt"
        before = asyncio.all_tasks()
        running[backend] = await EmbeddedBroker(kind).__aenter__()
        _session_tasks.update(asyncio.all_tasks() - before - {asyncio.current_task()})
    return running[backend]


async def _bus(request: pytest.FixtureRequest, running: dict[str, EmbeddedBroker]) -> Connector:
    if request.param == "memory":
        return MemoryBroker()  # fresh each test
    return await _started(str(request.param), running)


@pytest_asyncio.fixture(params=BUSES)
async def broker(request: pytest.FixtureRequest, _embedded: dict[str, EmbeddedBroker]) -> Connector:
    """The bus a CSC test runs on: in memory, and the site's broker (Mosquitto)."""
    return await _bus(request, _embedded)


@pytest_asyncio.fixture(params=EVERY_BUS)
async def every_bus(
    request: pytest.FixtureRequest, _embedded: dict[str, EmbeddedBroker]
) -> Connector:
    """Every bus: in memory, embedded amqtt and Mosquitto, for what the brokers' differences
    could break (the bus's own semantics, every CSC's life cycle and commands)."""
    return await _bus(request, _embedded)


@pytest_asyncio.fixture(params=SITE_BROKER)
async def site_broker(
    request: pytest.FixtureRequest, _embedded: dict[str, EmbeddedBroker]
) -> EmbeddedBroker:
    """One real broker for system tests whose subject is not the broker: Mosquitto, or
    the embedded amqtt where it is not installed."""
    return await _started(str(request.param), _embedded)


@pytest_asyncio.fixture(params=REAL_BROKERS)
async def real_broker(
    request: pytest.FixtureRequest, _embedded: dict[str, EmbeddedBroker]
) -> EmbeddedBroker:
    """A real broker (embedded amqtt, Mosquitto), shared by the session."""
    return await _started(str(request.param), _embedded)


@pytest_asyncio.fixture
async def mosquitto(_embedded: dict[str, EmbeddedBroker]) -> EmbeddedBroker:
    """Mosquitto only: for system tests whose subject is not the broker (one broker is
    enough for them, and it is the one sites run)."""
    if find_mosquitto() is None:
        pytest.skip(_MOSQUITTO_MISSING)
    return await _started("mosquitto", _embedded)


@pytest_asyncio.fixture(scope="module")
async def process_site_on_mosquitto(
    _embedded: dict[str, EmbeddedBroker], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ProcessSite]:
    """Weather:0, HeaderService:1, Archiver:1 and Camera:1, each in its own process on
    Mosquitto, shared by a module's tests (each leaves the site as it found it)."""
    if find_mosquitto() is None:
        pytest.skip(_MOSQUITTO_MISSING)
    broker = await _started("mosquitto", _embedded)
    async with process_site(broker, tmp_path_factory.mktemp("site") / "state") as site:
        yield site


@pytest_asyncio.fixture
async def process_site_now(process_site_on_mosquitto: ProcessSite) -> AsyncIterator[ProcessSite]:
    """The module's site, with a connection of this test's own."""
    async with process_site_on_mosquitto.connected() as site:
        yield site


@pytest.fixture(params=REAL_BROKERS)
def backend(request: pytest.FixtureRequest) -> str:
    """For tests that start (and restart or kill) a broker of their own."""
    return str(request.param)


_indices = itertools.count(100)


@pytest.fixture
def index() -> int:
    """A CSC index no other test has used, so retained messages never cross tests."""
    return next(_indices)


@pytest_asyncio.fixture(autouse=True)
async def _task_guard() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    leaked = [
        t
        for t in asyncio.all_tasks() - before - _session_tasks
        if t is not current and not t.done()
    ]
    for _ in range(50):  # let just-cancelled tasks finish their clean-up
        if not leaked:
            break
        await asyncio.sleep(0)
        leaked = [t for t in leaked if not t.done()]
    # aiomqtt starts a client's housekeeping task from paho's thread; when the socket
    # closes before that task is made (a broker restarted under the client), nothing
    # cancels it, and it ends by itself at its next look, within a second. Only those
    # are waited for; anything else of ours still running is a leak.
    paho_housekeeping = [t for t in leaked if t.get_coro().__qualname__ == "Client._misc_loop"]  # type: ignore[union-attr]
    if paho_housekeeping:
        await asyncio.wait(paho_housekeeping, timeout=5.0)
        leaked = [t for t in leaked if not t.done()]
    assert not leaked, f"test left tasks running: {[t.get_name() for t in leaked]}"


def _refused(what: str) -> Callable[..., object]:
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError(
            f"a test of the offline tier must not {what}: mark it @pytest.mark.broker "
            "(the system tier), or @pytest.mark.long"
        )

    return refuse


@contextlib.contextmanager
def _offline_tier_starts_nothing(item: pytest.Item) -> Iterator[None]:
    """What keeps ``make test-fast`` fast: an unmarked test that starts a process (any
    way: subprocess, asyncio, multiprocessing, fork), a broker or a Dask cluster fails,
    naming the mark it needs, instead of slowly creeping into the offline tier. Around
    the test's whole setup too, so a module's fixture that starts one is caught."""
    if item.get_closest_marker("broker") or item.get_closest_marker("long"):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", _refused("start a process"))
        patch.setattr(os, "fork", _refused("fork"))
        patch.setattr(multiprocessing.util, "spawnv_passfds", _refused("start a process"))
        patch.setattr(EmbeddedBroker, "__aenter__", _refused("start a broker"))
        spec = sys.modules.get("distributed.deploy.spec")  # imported by the modules using it
        if spec is not None:
            patch.setattr(spec.SpecCluster, "__init__", _refused("start a Dask cluster"))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _offline_tier_starts_nothing(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _offline_tier_starts_nothing(item):
        return (yield)


# The archive catalog on SQLite and on PostgreSQL (a server of the tests' own).


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[str]:
    """The URL of an administrative database: a server of the tests' own
    (tests/support/postgres.py), or the one CSCS_TEST_POSTGRES names. Skipped, with the
    reason shown, when there is neither."""
    if configured := os.environ.get("CSCS_TEST_POSTGRES"):
        yield configured
        return
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(private_postgres())
        except PostgresMissingError as missing:
            pytest.skip(str(missing))
        yield url


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server at ``admin_url``, dropped afterwards."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        name = f"cscs_test_{uuid.uuid4().hex[:12]}"
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    url = sa.engine.make_url(admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


# PostgreSQL is a server the tests start: the system tier (`broker`), not the offline one.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.broker)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "catalog.sqlite")
    else:
        with postgres_database(request.getfixturevalue("postgres_admin")) as url:
            yield url


# The EFD on SQLite and on InfluxDB 1.x (a server of the tests' own).


@pytest.fixture(scope="session")
def influx_server() -> Iterator[InfluxServer]:
    """An ``influxd`` of the tests' own (sim/site/influxd.py), shared by the session:
    a private port, data under a temporary directory, ``restart()`` for the tests of
    "InfluxDB restarted mid-night". Skipped, with the reason, without ``influxd``."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(private_influx())
        except InfluxMissingError as missing:
            pytest.skip(str(missing))
        yield server


@pytest.fixture
def influx_url(influx_server: InfluxServer) -> str:
    """The ``CSCS_EFD`` URL of a fresh database on the session's InfluxDB (made by the
    first write); the server is restarted if a test left it stopped."""
    if not influx_server.running:
        influx_server.start()
    return influx_server.url(f"efd_{uuid.uuid4().hex[:12]}")


# InfluxDB is a server the tests start: the system tier (`broker`), not the offline one.
@pytest.fixture(params=["sqlite", pytest.param("influxdb", marks=pytest.mark.broker)])
def efd_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty EFD: the embedded SQLite file, and a database on InfluxDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'efd' / 'efd.sqlite3'}"
    return str(request.getfixturevalue("influx_url"))


@pytest.fixture
def efd_store(efd_url: str) -> Iterator[EfdStore]:
    """An empty EFD store of each kind, closed afterwards."""
    store = open_store(efd_url)
    yield store
    store.close()
