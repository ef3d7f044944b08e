"""The Test CSC: component commands that succeed, fail, run long or misbehave on demand,
so that every outcome of the command protocol can be produced from outside
(``cscs run Test``) and checked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.config import ConfigSchema
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.generic import GENERIC
from cscs.core.schema import CommandSpec, EventSpec, NoParams, Payload, TelemetrySpec

__all__ = ["SCALARS", "SCALARS_TEL", "TestConfig", "TestCsc"]


class WaitParams(Payload):
    duration: float
    """Seconds to run; the command announces INPROGRESS with this timeout first."""


class FailParams(Payload):
    reason: str = "told to fail"


class ScalarsParams(Payload):
    value: int
    text: str = ""


class Scalars(Payload):
    value: int
    text: str


class TestConfig(ConfigSchema):
    __test__ = False  # not a pytest test class

    greeting: str = "hello"
    wait_scale: float = 1.0


PING = CommandSpec("ping", NoParams, "Answer COMPLETE at once (latency probe).")
WAIT = CommandSpec("wait", WaitParams, "Run for `duration` seconds.", timeout=60.0)
FAIL = CommandSpec("fail", FailParams, "Fail with ExpectedError(`reason`).")
BUG = CommandSpec("bug", NoParams, "Raise an unexpected exception (a bug).")
SLOW = CommandSpec("slow", NoParams, "Outlive its 0.1 s timeout.", timeout=0.1)
FAULT = CommandSpec("fault", NoParams, "Go to FAULT with errorCode 42.")
SET_SCALARS = CommandSpec("setScalars", ScalarsParams, "Publish the `scalars` event.")
SCALARS = EventSpec("scalars", Scalars, "Echo of setScalars.")
SCALARS_TEL = TelemetrySpec("scalars", Scalars, "Echo of setScalars, as telemetry.")


class TestCsc(BaseCsc[TestConfig]):
    """A CSC whose component commands exercise every outcome of the command protocol."""

    __test__ = False  # not a pytest test class
    interface = GENERIC.extended(
        "Test",
        "A CSC for testing the framework and the bus.",
        commands=(PING, WAIT, FAIL, BUG, SLOW, FAULT, SET_SCALARS),
        events=(SCALARS,),
        telemetry=(SCALARS_TEL,),
    )
    config_schema = TestConfig
    default_config_dir: ClassVar[Path | None] = Path(__file__).parent / "config"

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [
            bind(PING, self.do_ping),
            bind(WAIT, self.do_wait),
            bind(FAIL, self.do_fail),
            bind(BUG, self.do_bug),
            bind(SLOW, self.do_slow),
            bind(FAULT, self.do_fault),
            bind(SET_SCALARS, self.do_set_scalars),
        ]

    async def do_ping(self, params: NoParams, context: CommandContext) -> None:
        return None

    async def do_wait(self, params: WaitParams, context: CommandContext) -> str:
        await context.in_progress(params.duration, "waiting")
        await asyncio.sleep(params.duration)
        return f"waited {params.duration:g} s"

    async def do_fail(self, params: FailParams, context: CommandContext) -> None:
        raise ExpectedError(params.reason)

    async def do_bug(self, params: NoParams, context: CommandContext) -> None:
        raise ZeroDivisionError("division by zero (deliberate)")

    async def do_slow(self, params: NoParams, context: CommandContext) -> None:
        await asyncio.sleep(10)

    async def do_fault(self, params: NoParams, context: CommandContext) -> None:
        await self.fault(42, "told to fault")

    async def do_set_scalars(self, params: ScalarsParams, context: CommandContext) -> None:
        scalars = Scalars(value=params.value, text=params.text)
        await self.publish_event(SCALARS, scalars)
        await self.publish_telemetry(SCALARS_TEL, scalars)
