"""A camera whose DAQ binds a wildcard (``tcp://*:N``) announces an address another host
can connect to, not ``0.0.0.0`` (issue 29, item 16c): the configured advertise address
(``CSCS_DAQ_ADVERTISE``), or this host's name."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cscs.camera.events import DAQ_AVAILABLE
from cscs.core.broker import EmbeddedBroker
from cscs.core.settings import Settings, settings_from_env
from cscs.core.testing import make_csc
from sim.daq.camera import CameraCsc
from sim.daq.endpoints import announced_endpoint


@pytest.mark.parametrize("bound", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://[::]:5555"])
def test_a_wildcard_bind_is_announced_as_the_advertised_host(bound: str) -> None:
    assert announced_endpoint(bound, "daq.example.org", "camhost") == "tcp://daq.example.org:5555"
    assert announced_endpoint(bound, "", "camhost") == "tcp://camhost:5555"


@pytest.mark.parametrize("bound", ["tcp://10.0.0.5:5555", "tcp://[::1]:5555", "ipc:///tmp/d"])
def test_a_specific_bind_is_announced_as_bound(bound: str) -> None:
    assert announced_endpoint(bound, "daq.example.org", "camhost") == bound


def test_the_advertise_address_must_be_a_host() -> None:
    assert settings_from_env({"CSCS_DAQ_ADVERTISE": "[fe80::1]"}).daq_advertise == "[fe80::1]"
    for bad in ("tcp://x:1", "a b", "host:5555", "x,y", "a\nb"):
        with pytest.raises(ValueError, match="CSCS_DAQ_ADVERTISE"):
            settings_from_env({"CSCS_DAQ_ADVERTISE": bad})


@pytest.mark.broker
@pytest.mark.parametrize("advertise", ["", "localhost"])
async def test_a_camera_bound_to_every_interface_announces_a_reachable_host(
    mosquitto: EmbeddedBroker, index: int, tmp_path: Path, advertise: str
) -> None:
    settings = Settings(prefix=f"w{index}", state_dir=tmp_path, daq_bind="tcp://*:*",
                        daq_advertise=advertise)  # fmt: skip
    async with make_csc(CameraCsc, mosquitto, index=1, settings=settings) as camera:
        url = (await camera.remote.next(DAQ_AVAILABLE, timeout=30)).data.url
    host = url.removeprefix("tcp://").rpartition(":")[0]
    assert host == (advertise or socket.gethostname()), url
