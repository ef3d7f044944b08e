"""Every CSC the project ships, found as ``cscs run`` finds them: the life cycle, the
command protocol, authorization and configuration as ICD §2-4 write them, on the
in-memory bus and on both real brokers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cscs import components
from cscs.core.protocol import AckCode
from cscs.core.remote import AckError
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.testing import check_bad_commands, check_standard_state_transitions, make_csc
from cscs.core.transport import Connector

# Valid parameters of each component command: each must be refused outside ENABLED.
ENABLED_COMMANDS: dict[str, dict[str, dict[str, Any]]] = {
    "Archiver": {"catchUp": {}},
    "EfdWriter": {},
    "Camera": {
        "takeImages": {"numImages": 1, "expTime": 0.0, "shutter": False, "imageType": "BIAS"}
    },
    "HeaderService": {},
    "OODS": {},
    "OCSBatch": {
        "execute": {"pipeline": "image-qc", "dataQuery": "instrument = 'LATISS'"},
        "abortJob": {"jobId": "20261121-00000000"},
    },
    "TelemetryGateway": {
        "acknowledge": {"name": "qc.*", "severity": 4, "acknowledgedBy": "staff"},
        "mute": {"name": "qc.*", "duration": 60.0, "severity": 4, "mutedBy": "staff"},
        "unmute": {"name": "qc.*"},
    },
    "Telescope": {"slew": {"ra": 10.0, "dec": -30.0}, "setFilter": {"filter": "r"}},
    "Test": {"ping": {}, "wait": {"duration": 1}, "fail": {}, "bug": {}, "slow": {}},
    "Weather": {
        "setWeather": {"temperature": 1.0, "pressure": 700.0, "humidity": 10.0,
                       "windSpeed": 1.0, "windDirection": 90.0}
    },
}  # fmt: skip
# Each CSC's index: the cameras' components take the camera's (1 LATISS).
INDEX = {"Weather": 0, "OCSBatch": 0, "TelemetryGateway": 0, "EfdWriter": 0}


def test_every_registered_csc_is_checked_here() -> None:
    """A CSC registered but missing from this table would escape the checks below."""
    assert sorted(ENABLED_COMMANDS) == components.names(components.PROJECT)


# OCS Batch starts a Dask cluster of worker processes when started: the system tier.
STARTS_PROCESSES = {"OCSBatch"}


@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.broker) if name in STARTS_PROCESSES else name
        for name in components.names(components.PROJECT)
    ]
)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def settings(index: int, tmp_path: Path) -> Settings:
    return Settings(prefix=f"every{index}", state_dir=tmp_path)


@pytest.fixture
def broker(every_bus: Connector) -> Connector:
    """Every shipped CSC on every bus (in memory, embedded amqtt, Mosquitto): what the
    brokers' differences could break in a CSC shows here."""
    return every_bus


async def test_life_cycle(broker: Connector, index: int, name: str, tmp_path: Path) -> None:
    """Every transition from every working state; component commands only in ENABLED."""
    async with make_csc(
        components.find(name),
        broker,
        index=INDEX.get(name, 1),
        settings=settings(index, tmp_path),
    ) as h:
        await check_standard_state_transitions(h.remote, ENABLED_COMMANDS[name])


async def test_bad_commands(broker: Connector, index: int, name: str, tmp_path: Path) -> None:
    """Unknown commands, ill-typed parameters and unreadable payloads, each refused or
    dropped naming the cause; the CSC answers afterwards."""
    async with make_csc(
        components.find(name),
        broker,
        index=INDEX.get(name, 1),
        settings=settings(index, tmp_path),
    ) as h:
        await check_bad_commands(h.remote)


async def test_authorization_and_configuration(
    broker: Connector, index: int, name: str, tmp_path: Path
) -> None:
    """Once users are listed, anyone else gets NOPERM and nothing changes; an override
    that does not exist is refused naming those that do; the CSC stays in STANDBY."""
    async with make_csc(
        components.find(name),
        broker,
        index=INDEX.get(name, 1),
        settings=settings(index, tmp_path),
    ) as h:
        await h.remote.command("setAuthList", {"authorizedUsers": "night@summit"})
        h.remote.identity = "intruder@elsewhere"
        with pytest.raises(AckError) as refused:
            await h.remote.command("start")
        assert refused.value.ack.code is AckCode.NOPERM
        assert "intruder@elsewhere is not authorized" in refused.value.ack.result
        h.remote.identity = "night@summit"
        missing = await h.remote.command(
            "start", {"configurationOverride": "no-such-override"}, check=False
        )
        assert missing.code is AckCode.FAILED
        assert "'no-such-override' not found" in missing.result
        assert "available:" in missing.result
        assert await h.remote.state() is State.STANDBY
        await h.remote.command("start")
        assert await h.remote.state() is State.DISABLED
