"""No task of a CSC dies silently (cscs.core.tasks): each kind is killed here and its
outcome checked — reported (errorCode 1001 with the traceback, FAULT) and running again,
or handled as its owner says. Also: one final ack per (origin, seq), and retained events
that someone else publishes on a CSC's topics are corrected. All on the in-memory bus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from cscs.core import generic as g
from cscs.core.backoff import Backoff
from cscs.core.dispatch import RecentCommands
from cscs.core.protocol import Ack, AckCode, encode
from cscs.core.remote import EventStream
from cscs.core.states import State
from cscs.core.tasks import Jobs, keep_running
from cscs.core.testing import CscHarness, MemoryBroker, TestCsc, make_csc, send_raw
from cscs.core.transport import Message, Transport

pytestmark = pytest.mark.timeout(60)


class Once:
    """Raises ``error`` the first time it is called, then behaves as ``then``."""

    def __init__(self, then: Callable[..., Any], error: Exception) -> None:
        self.then = then
        self.error = error
        self.fired = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.fired:
            self.fired = True
            raise self.error
        return self.then(*args, **kwargs)


async def error_then_fault(h: CscHarness) -> dict[str, Any]:
    """The errorCode, once the CSC is in FAULT."""
    await h.remote.wait_for_state(State.FAULT)
    return (await h.remote.next_event("errorCode")).data


async def test_a_loop_that_fails_is_reported_and_restarted() -> None:
    """keep_running: each failure (an exception, or the loop returning) reported with
    its name; the loop started again every time."""
    runs: list[int] = []
    reported: list[tuple[str, str]] = []
    third = asyncio.Event()

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise KeyError("boom")
        if len(runs) == 2:
            return  # ended by itself: a failure too
        third.set()
        await asyncio.Event().wait()

    async def on_failure(name: str, exc: BaseException) -> None:
        reported.append((name, repr(exc)))

    from structlog import get_logger

    fast = Backoff(initial=0.001, maximum=0.001)
    task = asyncio.create_task(keep_running(loop, "reader", get_logger(), on_failure, fast))
    await asyncio.wait_for(third.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reported == [("reader", "KeyError('boom')"), ("reader", reported[1][1])]
    assert "ended by itself" in reported[1][1]


async def test_a_job_failure_goes_to_its_handler_or_to_the_csc() -> None:
    """Jobs: on_error handles the job's own failure; without one, the CSC's handler."""
    from structlog import get_logger

    handled: list[str] = []
    done = asyncio.Event()

    async def on_failure(name: str, exc: BaseException) -> None:
        handled.append(f"csc:{name}:{exc}")
        done.set()

    async def on_error(exc: BaseException) -> None:
        handled.append(f"own:{exc}")

    async def fails(what: str) -> None:
        raise RuntimeError(what)

    jobs = Jobs(get_logger(), "Test:1", on_failure)
    jobs.spawn(fails("a"), "first", on_error=on_error)
    jobs.spawn(fails("b"), "second")
    await asyncio.wait_for(done.wait(), 10)
    assert sorted(handled) == ["csc:Test:1-second:b", "own:a"]


def fail_once_publishing_on(bus: Transport, topic: str, failure: Exception) -> None:
    """The next publication on ``topic`` through ``bus`` raises ``failure``: a bug in
    whatever publishes there, in the task doing it."""
    publish = bus.publish
    fired = False

    async def failing(on: str, payload: bytes, **kwargs: Any) -> bool:
        nonlocal fired
        if on == topic and not fired:
            fired = True
            raise failure
        return await publish(on, payload, **kwargs)

    bus.publish = failing  # type: ignore[method-assign,assignment]


@pytest.mark.parametrize("which", ["commands", "heartbeat", "logs", "own-events"])
async def test_each_background_task_of_a_csc_is_supervised(which: str) -> None:
    """Kill the command reader, the heartbeat, the log publisher or the retained-event
    guard: errorCode 1001 naming it, with a traceback; FAULT; and it works again (the
    CSC answers standby, beats, logs)."""
    async with make_csc(
        TestCsc, MemoryBroker(), initial_state=State.DISABLED, heartbeat_interval=0.2
    ) as h:
        csc = h.csc
        failure = RuntimeError(f"{which} killed by the test")
        if which == "commands":
            csc.commands.receive = Once(csc.commands.receive, failure)  # type: ignore[method-assign]
            await send_raw(h.bus, csc.address, "ping", b"{}")
        elif which in ("heartbeat", "logs"):
            name = "heartbeat" if which == "heartbeat" else "logMessage"
            fail_once_publishing_on(csc.bus, csc.address.event(name), failure)
            if which == "logs":
                csc.log.warning("a record to publish")
        else:
            await h.remote.next_event("logLevel")  # published by the CSC: what it has to say
            # A forgery on it: the guard's correction, the only thing published there now.
            fail_once_publishing_on(csc.bus, csc.address.event("logLevel"), failure)
            await h.bus.publish(csc.address.event("logLevel"), b"{}", retain=False)
        error = await error_then_fault(h)
        assert error["errorCode"] == g.ERROR_TASK_FAILED
        assert error["errorReport"].startswith(f"{which} failed unexpectedly")
        assert "killed by the test" in error["errorReport"]
        assert "Traceback" in error["traceback"]
        await h.remote.command("standby", timeout=30)  # the command reader works
        async with h.remote.stream("heartbeat") as beats:
            await beats.next(timeout=30)  # and the heartbeat


async def test_a_failing_follow_handler_drops_that_message_only() -> None:
    """A handler that raises on one message: logged with the traceback, the next ones
    still handled."""
    async with make_csc(TestCsc, MemoryBroker()) as h:
        heard: list[int] = []
        second = asyncio.Event()

        def handler(received: Any) -> None:
            heard.append(received.data["n"])
            if received.data["n"] == 1:
                raise ValueError("a handler bug")
            second.set()

        await h.csc.follow_topic("elsewhere/Thing/0/evt/x", handler)
        async with h.remote.stream("logMessage") as logs:
            for n in (1, 2):
                await h.bus.publish("elsewhere/Thing/0/evt/x", encode({"n": n}))
            await asyncio.wait_for(second.wait(), 10)
            record = await logs.wait_for(lambda r: "could not be handled" in r.data["message"])
        assert heard == [1, 2]
        assert "a handler bug" in record.data["traceback"]


# ---- one final ack per (origin, seq) ---------------------------------------------------


def test_recent_commands_remember_by_count_and_time() -> None:
    recent = RecentCommands(size=2, window=10.0)
    assert recent.hear("ocs", 1, "start", now=0.0) is None
    repeat = recent.hear("ocs", 1, "start", now=1.0)
    assert repeat is not None
    assert repeat.final is None  # still running
    recent.finished(Ack(1, "ocs", "start", AckCode.INPROGRESS, "", timeout=5.0))
    recent.finished(Ack(1, "ocs", "start", AckCode.COMPLETE, "Done"))
    repeat = recent.hear("ocs", 1, "start", now=2.0)
    assert repeat is not None
    assert repeat.final is not None
    assert repeat.final.code is AckCode.COMPLETE
    recent.hear("ocs", 2, "enable", now=3.0)
    recent.hear("ocs", 3, "enable", now=3.0)  # over the count: (ocs, 1) forgotten
    assert recent.hear("ocs", 1, "start", now=4.0) is None
    assert recent.hear("ocs", 3, "enable", now=20.0) is None  # over the time window
    assert len(recent) == 1


async def final_acks(acks: EventStream, seq: int, origin: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while len(found) < count:
        ack = await acks.next(timeout=10)
        data = ack.data
        if data["seq"] == seq and data["origin"] == origin and data["ack"] != "INPROGRESS":
            found.append(data)
    return found


class CountingCsc(TestCsc):
    """Counts the runs of its ``wait`` command."""

    runs = 0

    async def do_wait(self, params: Any, context: Any) -> str:
        CountingCsc.runs += 1
        return await super().do_wait(params, context)


async def test_a_command_heard_twice_runs_once_and_has_one_final_ack() -> None:
    """The same (origin, seq) again while it runs: nothing more; again after it
    finished: the same final ack again, and the command is not run again."""
    async with make_csc(CountingCsc, MemoryBroker(), initial_state=State.ENABLED) as h:
        body = encode(
            {"seq": 41, "origin": "ocs-x", "identity": "ocs@summit", "params": {"duration": 0.3}}
        )
        ran = CountingCsc.runs
        async with h.bus.subscription(h.csc.address.ack) as subscription:
            acks = EventStream(subscription)
            await send_raw(h.bus, h.csc.address, "wait", body)
            await send_raw(h.bus, h.csc.address, "wait", body)  # while it runs
            first = await final_acks(acks, 41, "ocs-x", 1)
            await send_raw(h.bus, h.csc.address, "wait", body)  # after it finished
            again = await final_acks(acks, 41, "ocs-x", 1)
            # one more command from the same origin: answered, and nothing else came
            other = encode({"seq": 42, "origin": "ocs-x", "identity": "ocs@summit", "params": {}})
            await send_raw(h.bus, h.csc.address, "ping", other)
            later = await acks.wait_for(lambda r: r.data["ack"] == "COMPLETE", timeout=10)
        assert CountingCsc.runs == ran + 1
        assert first[0]["ack"] == "COMPLETE"
        assert again[0] == first[0] | {"sent_tai": again[0]["sent_tai"]}
        assert later.data["seq"] == 42


# ---- retained events are the CSC's own -----------------------------------------------


async def test_a_forged_retained_state_is_corrected_by_the_csc() -> None:
    """Someone publishes a retained FAULT on an ENABLED CSC's summaryState, and an
    errorCode it never published: it publishes its state again and clears the error."""
    broker = MemoryBroker()
    async with make_csc(TestCsc, broker, initial_state=State.ENABLED) as h:
        address = h.csc.address
        forged = {"summaryState": 3, "name": "FAULT", "seq": 99, "sent_tai": 0.0}
        async with h.remote.stream("#") as events:
            await h.bus.publish(address.event("summaryState"), encode(forged), retain=True)
            await h.bus.publish(
                address.event("errorCode"),
                encode({"errorCode": 1, "errorReport": "forged", "seq": 1, "sent_tai": 0.0}),
                retain=True,
            )
            await events.wait_for(
                lambda r: r.name == "summaryState" and r.data["summaryState"] == 2, timeout=10
            )
        seen: dict[str, bytes] = {}  # what a monitor starting now sees
        async with broker.transport() as fresh, fresh.subscription(address.event("+")) as kept:
            while "summaryState" not in seen:
                message = await kept.get(10)
                seen[message.topic.rsplit("/", 1)[-1]] = message.payload
        assert json.loads(seen["summaryState"])["summaryState"] == 2
        assert seen.get("errorCode", b"") == b""  # cleared (or not yet replayed)


def test_the_guard_ignores_echoes_and_replays_and_limits_its_rate() -> None:
    from cscs.core.publisher import Publisher
    from cscs.core.retained import RetainedGuard
    from cscs.core.testing import TestCsc as Csc
    from cscs.core.topics import CscAddress

    address = CscAddress("Test", 1)
    publisher = Publisher(Csc.interface, address)
    topic, first = publisher.event(g.SUMMARY_STATE, g.SummaryState(summaryState=1, name="D"))
    _, second = publisher.event(g.SUMMARY_STATE, g.SummaryState(summaryState=2, name="E"))
    guard = RetainedGuard({topic, address.event("errorCode")}, publisher, interval=1.0)
    assert guard.check(Message(topic, first), 0.0) is None  # an echo, late
    assert guard.check(Message(topic, b"forged", retain=True), 0.0) is None  # a replay
    correction = guard.check(Message(topic, b"forged"), 0.0)
    assert correction is not None
    assert correction.payload == second
    assert guard.check(Message(topic, b"forged again"), 0.5) is None  # rate-limited
    assert guard.suppressed == 1
    assert guard.next_due() == 1.0  # ... and corrected when the interval ends
    assert guard.due(0.9) == []
    (deferred,) = guard.due(1.0)
    assert (deferred.topic, deferred.payload) == (topic, second)
    assert guard.next_due() is None
    cleared = guard.check(Message(address.event("errorCode"), b"forged"), 0.5)
    assert cleared is not None
    assert cleared.payload == b""
    assert guard.check(Message(address.event("heartbeat"), b"x"), 0.5) is None
