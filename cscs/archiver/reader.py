"""Reading one sensor from the DAQ the way the archiver needs it: retried when the
failure may pass, given up on at once when it cannot, and the DAQ's absence timed.

A stall, a corrupt segment or no answer at all may pass, so the read is tried again, up
to ``attempts`` times, with jittered back-off; an image the DAQ no longer holds, or a
sensor that was never read out, will not come back, so the first such answer is final.
When the DAQ has not answered at all for longer than ``fault_after`` seconds,
``on_unreachable`` is told (the archiver goes to FAULT): one silent image is a blip,
a minute of silence is an outage the night staff must see.

A read is not over when the pixels have arrived: they are checked against the data sums
the DAQ sent in the pass that uses them (the raw writer's, ADR 0041), so the use is part
of the attempt, and a segment that does not sum to its ``DATASUM`` there
(:class:`~cscs.daq.errors.ChecksumMismatchError`) fails the attempt as a corrupt frame
on arrival would: before anything is written, and the sensor read again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from structlog.typing import FilteringBoundLogger

from cscs.core.backoff import Backoff
from cscs.daq.client import DaqClient
from cscs.daq.errors import DaqError, DaqUnavailableError
from cscs.daq.reader import DaqReader, SensorPixels

__all__ = ["DaqOpener", "DaqReads", "ReadFailedError", "open_daq_client"]

T = TypeVar("T")

#: Opens a reader of the DAQ at a URL with the given (answer, stall) timeouts.
DaqOpener = Callable[[str, float, float], Awaitable[DaqReader]]


async def open_daq_client(url: str, timeout: float, stall_timeout: float) -> DaqReader:
    """The ZeroMQ :class:`~cscs.daq.client.DaqClient`: what a real archiver reads with
    (a test gives the archiver another opener, and a fake DAQ)."""
    client = DaqClient(url, timeout=timeout, stall_timeout=stall_timeout)
    await client.__aenter__()
    return client


class ReadFailedError(Exception):
    """No pixels for this sensor now; the message says why (for imageRetrievalFailed).
    ``unreachable``: the last attempt had no answer from the DAQ at all."""

    def __init__(self, why: str, *, unreachable: bool = False) -> None:
        super().__init__(why)
        self.unreachable = unreachable


class DaqReads:
    """Reads through whichever :class:`DaqReader` is current (``daq``)."""

    def __init__(
        self,
        log: FilteringBoundLogger,
        on_unreachable: Callable[[str], None],
        *,
        attempts: int = 3,
        fault_after: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.daq: DaqReader | None = None
        self.attempts = attempts
        self.fault_after = fault_after
        self._log = log
        self._on_unreachable = on_unreachable
        self._sleep = sleep
        self._clock = clock
        self._down_since: float | None = None

    async def read(self, image: str, sensor: str, use: Callable[[SensorPixels], Awaitable[T]]) -> T:
        """What ``use`` makes of the sensor's pixels (it verifies them:
        :class:`~cscs.daq.reader.SensorPixels`); ReadFailedError after the last attempt."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        failure, unreachable = "", False
        for attempt in range(1, self.attempts + 1):
            unreachable = False
            if self.daq is None:
                failure = "no DAQ known yet (no daqAvailable from the camera, no daq_url)"
            else:
                try:
                    pixels = await self.daq.read_sensor(image, sensor)
                    try:
                        return_value = await use(pixels)
                    finally:
                        del pixels  # not kept through the back-off
                except DaqUnavailableError as exc:
                    failure, unreachable = str(exc), True
                    self.unreachable(failure)
                except DaqError as exc:
                    self.reachable()
                    failure = str(exc)
                    if not exc.retriable:
                        break
                else:
                    self.reachable()
                    return return_value
            retrying = attempt < self.attempts
            what = "DAQ read failed; retrying" if retrying else "DAQ read failed"
            self._log.warning(what, image=image, sensor=sensor, attempt=attempt, error=failure)
            if retrying:
                await self._sleep(backoff.next_delay())
        raise ReadFailedError(failure, unreachable=unreachable)

    def reachable(self) -> None:
        """The DAQ answered (here, or a Dask worker's read of it)."""
        self._down_since = None

    def unreachable(self, why: str) -> None:
        """The DAQ did not answer (here, or a Dask worker's read of it)."""
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
        elif now - self._down_since > self.fault_after:
            self._on_unreachable(
                f"the DAQ has been unreachable for {now - self._down_since:.1f} s: {why}"
            )
