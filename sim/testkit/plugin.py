"""The test kit's pytest plugin: the whole simulated observatory as fixtures, for a
user's test suite (``docs/testkit.md``). Registered through the ``pytest11`` entry point,
so installing the package is all it takes.

* ``cscs_broker`` — the bus: in memory unless a test asks for ``"amqtt"`` (the embedded
  pure-Python broker) or ``"mosquitto"`` by indirect parametrization; no broker to
  install either way but the last;
* ``cscs_observatory_options`` — what :func:`~sim.testkit.observatory` is given (camera
  index, camera and archiver settings); override it to change the site;
* ``cscs_observatory`` — the site, ENABLED, for one test (:class:`~sim.testkit.Observatory`);
* ``cscs_camera`` — a :class:`~cscs.core.remote.Remote` to its camera;
* ``cscs_archive`` — its archive as announced from the start of the test
  (:class:`~sim.testkit.ArchiveWatch`): ``await cscs_archive.verified(image)``.

pytest loads this module in every run in the environment, used or not: it imports
nothing of the project at its top (each fixture imports what it runs), adds no command
line option and no autouse fixture, and every name it adds starts with ``cscs_``. The
fixtures are coroutines, run by pytest-asyncio (``pip install pytest-asyncio``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from cscs.core.remote import Remote
    from cscs.core.transport import Connector
    from sim.testkit import ArchiveWatch, Observatory

try:
    import pytest_asyncio
except ImportError:  # the kit's fixtures then say what is missing when asked for
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = [
    "cscs_archive",
    "cscs_broker",
    "cscs_camera",
    "cscs_observatory",
    "cscs_observatory_options",
]

BUSES = ("memory", "amqtt", "mosquitto")


def _async_fixture(function: Callable[..., Any]) -> Any:
    """``function`` as a pytest-asyncio fixture; without pytest-asyncio, a fixture of the
    same name that fails saying so (rather than pytest's puzzling "never awaited")."""
    if pytest_asyncio is not None:
        return pytest_asyncio.fixture(function)

    def missing() -> None:
        pytest.fail(
            f"{function.__name__} needs pytest-asyncio: pip install pytest-asyncio",
            pytrace=False,
        )

    missing.__doc__ = function.__doc__
    return pytest.fixture(name=function.__name__)(missing)


@_async_fixture
async def cscs_broker(request: pytest.FixtureRequest) -> AsyncIterator[Connector]:
    """The bus the observatory runs on: in memory (the default), or by indirect
    parametrization ``"amqtt"`` (a pure-Python broker in a child process) or
    ``"mosquitto"`` (needs it installed), started for this test::

        @pytest.mark.parametrize("cscs_broker", ["memory", "amqtt"], indirect=True)
    """
    bus = getattr(request, "param", "memory")
    if bus not in BUSES:
        raise ValueError(f"cscs_broker: {bus!r} is none of {', '.join(BUSES)}")
    if bus == "memory":
        from cscs.core.testing import MemoryBroker

        yield MemoryBroker()
        return
    from cscs.core.broker import EmbeddedBroker

    async with EmbeddedBroker("mosquitto" if bus == "mosquitto" else "amqtt") as broker:
        yield broker


@pytest.fixture
def cscs_observatory_options() -> dict[str, Any]:
    """Keyword arguments for :func:`sim.testkit.observatory`: none (LATISS, camera index
    1, its ``fast`` settings). Override it in a conftest or a test module, e.g.
    ``{"index": 2}`` for ComCam, ``{"camera": {"sensors": ["R22_S11"]}}`` for one CCD,
    ``{"archiver": {...}}`` for archiver settings."""
    return {}


@_async_fixture
async def cscs_observatory(
    cscs_broker: Connector, cscs_observatory_options: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Observatory]:
    """The whole site for one test, every CSC ENABLED on ``cscs_broker`` under a topic
    prefix of its own, its state and archive under ``tmp_path``; stopped at the end."""
    from sim.testkit import observatory

    prefix = f"cscs{uuid.uuid4().hex[:8]}"
    async with observatory(cscs_broker, prefix, tmp_path, **cscs_observatory_options) as obs:
        yield obs


@pytest.fixture
def cscs_camera(cscs_observatory: Observatory) -> Remote:
    """A Remote to the site's camera: ``await cscs_camera.command("takeImages", ...)``,
    its events with ``cscs_camera.events(...)``."""
    return cscs_observatory.camera.remote


@_async_fixture
async def cscs_archive(cscs_observatory: Observatory) -> AsyncIterator[ArchiveWatch]:
    """The site's archive, followed from before the test starts: images read out, and
    ``await cscs_archive.verified(image)`` — its files archived, re-read and verified."""
    async with cscs_observatory.watch() as archive:
        yield archive
