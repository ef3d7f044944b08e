"""Test fixtures: real brokers (embedded amqtt and, when installed, Mosquitto), fresh
CSC indices, and a guard that fails any test leaving asyncio tasks behind."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, settings

from cscs.core.broker import EmbeddedBroker, find_mosquitto

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

BACKENDS = [
    "amqtt",
    pytest.param(
        "mosquitto",
        marks=pytest.mark.skipif(
            find_mosquitto() is None,
            reason="mosquitto is not installed (apt-get install mosquitto); .ci/run installs it",
        ),
    ),
]


@pytest_asyncio.fixture(scope="session", params=BACKENDS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[EmbeddedBroker]:
    """A broker shared by the tests of one backend (each test uses fresh CSC indices)."""
    async with EmbeddedBroker(request.param) as running:
        yield running


@pytest.fixture(params=BACKENDS)
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
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for _ in range(50):  # let just-cancelled tasks finish their clean-up
        if not leaked:
            break
        await asyncio.sleep(0)
        leaked = [t for t in leaked if not t.done()]
    assert not leaked, f"test left tasks running: {[t.get_name() for t in leaked]}"
