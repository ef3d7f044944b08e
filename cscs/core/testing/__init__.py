"""A test kit shipped with the package, for this project's tests and for users'.

* :class:`MemoryBroker` — the bus in memory, with the broker semantics the CSCs rely
  on, so CSC logic is tested with no broker (``make test-fast``);
* :class:`TestCsc` — a CSC whose commands produce every outcome (``cscs run Test``);
* :func:`make_csc` — run any CSC and a :class:`~cscs.core.remote.Remote` to it;
* :func:`check_standard_state_transitions`, :func:`check_bad_commands` — the checks
  every CSC must pass.
"""

from cscs.core.testing.csc import TestConfig, TestCsc
from cscs.core.testing.harness import (
    CscHarness,
    check_bad_commands,
    check_standard_state_transitions,
    enabled_csc,
    make_csc,
    send_raw,
)
from cscs.core.testing.memory import MemoryBroker, MemoryTransport

__all__ = [
    "CscHarness",
    "MemoryBroker",
    "MemoryTransport",
    "TestConfig",
    "TestCsc",
    "check_bad_commands",
    "check_standard_state_transitions",
    "enabled_csc",
    "make_csc",
    "send_raw",
]
