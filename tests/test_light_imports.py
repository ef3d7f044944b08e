"""The framework's light modules load no MQTT client library: the protocol, the
declarations, the state machine and a broker's address are used by tools that never
connect (the interface document, the configuration checks), and importing ``aiomqtt``
and ``paho`` costs each such process time and memory. A fresh interpreter, since this
one has loaded them long ago."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT = [
    "cscs.core.topics",
    "cscs.core.states",
    "cscs.core.schema",
    "cscs.core.protocol",
    "cscs.core.generic",
    "cscs.core.transport",
    "cscs.core.broker_address",
    "cscs.core.refusal",
    "cscs.core.delivery",
    "cscs.core.settings",
    "cscs.core.broker",
]
HEAVY = ("aiomqtt", "paho", "amqtt")

# Each module in turn, in one interpreter: the first that loads one is named.
CHECK = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
    if heavy:
        sys.exit(f"importing {{name}} loaded {{heavy[:3]}}")
"""


@pytest.mark.broker  # a fresh interpreter: a process, so the system tier
def test_light_modules_of_the_framework_load_no_mqtt_library() -> None:
    check = CHECK.format(heavy=set(HEAVY))
    result = subprocess.run(
        [sys.executable, "-c", check, *LIGHT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
