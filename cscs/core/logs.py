"""Logging for CSCs: structlog processors (pure functions) and the edge that prints.

Each CSC gets its own logger (no global configuration): records below the CSC's log
level are dropped, the rest are printed to stderr and handed to the CSC, which
publishes them as ``logMessage`` events (ICD §3).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.processors import CallsiteParameter, CallsiteParameterAdder
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from cscs.core.generic import LogMessage

__all__ = ["LevelFilter", "PublishLogRecord", "Throttle", "level_number", "make_csc_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def level_number(method_name: str) -> int:
    return _LEVELS.get(method_name, logging.INFO)


class LevelFilter:
    """Drop records below a level that may change while the CSC runs (setLogLevel)."""

    def __init__(self, level: Callable[[], int]) -> None:
        self._level = level

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if level_number(method_name) < self._level():
            raise structlog.DropEvent
        return event_dict


class PublishLogRecord:
    """Hand each record, as a ``logMessage`` payload, to ``sink`` (which must not block)."""

    _INTERNAL = frozenset(
        {"event", "level", "timestamp", "exc_info", "pathname", "func_name", "lineno", "csc"}
    )

    def __init__(self, name: str, sink: Callable[[LogMessage], None]) -> None:
        self._name = name
        self._sink = sink

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        context = " ".join(
            f"{key}={value}" for key, value in event_dict.items() if key not in self._INTERNAL
        )
        message = str(event_dict.get("event", ""))
        self._sink(
            LogMessage(
                name=self._name,
                level=level_number(method_name),
                message=f"{message} {context}".strip(),
                traceback=_format_exc_info(event_dict.get("exc_info")),
                filePath=str(event_dict.get("pathname", "")),
                functionName=str(event_dict.get("func_name", "")),
                lineNumber=int(event_dict.get("lineno", 0)),
            )
        )
        return event_dict


def _format_exc_info(exc_info: object) -> str:
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        return "".join(traceback.format_exception(exc_info))
    if isinstance(exc_info, tuple) and exc_info and exc_info[0] is not None:
        return "".join(traceback.format_exception(*exc_info))
    return ""


def make_csc_logger(
    name: str,
    level: Callable[[], int],
    sink: Callable[[LogMessage], None],
    stream: TextIO | None = None,
) -> FilteringBoundLogger:
    """A logger for one CSC: filtered by its level, published, printed to ``stream``."""
    processors: list[Processor] = [
        LevelFilter(level),
        structlog.processors.add_log_level,
        CallsiteParameterAdder(
            [CallsiteParameter.PATHNAME, CallsiteParameter.FUNC_NAME, CallsiteParameter.LINENO]
        ),
        PublishLogRecord(name, sink),
        _drop_callsite,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.dev.ConsoleRenderer(colors=False),
    ]
    logger: FilteringBoundLogger = structlog.wrap_logger(
        structlog.PrintLogger(stream or sys.stderr),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        context_class=dict,
    ).bind(csc=name)
    return logger


def _drop_callsite(
    logger: WrappedLogger, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The call site is published; on the console it is noise."""
    for key in ("pathname", "func_name", "lineno"):
        event_dict.pop(key, None)
    return event_dict


class Throttle:
    """At most one log line per ``interval`` seconds for a condition that may recur at
    a hostile peer's rate (a flood of forged messages), each saying how many were
    suppressed since the last: a flood is visible, but never becomes a flood of logs.

    :meth:`admit` is the decision (no I/O), for callers that log their own way (the DAQ
    server, from its thread); :meth:`warning` logs through a structlog logger."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.suppressed = 0
        self._clock = clock
        self._last: float | None = None

    def admit(self) -> tuple[int, float] | None:
        """None to keep quiet (counted); else, for the line to say now, how many were
        kept quiet before it and over how many seconds (0 for the first line)."""
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return None
        said = (self.suppressed, now - self._last if self._last is not None else 0.0)
        self._last, self.suppressed = now, 0
        return said

    def overdue(self) -> tuple[int, float] | None:
        """Like :meth:`admit`, for a periodic flush: only when lines were kept quiet and
        the interval has passed since the last one said."""
        if not self.suppressed or self._last is None:
            return None
        if self._clock() - self._last < self.interval:
            return None
        return self.admit()

    def warning(self, log: FilteringBoundLogger, event: str, **fields: Any) -> bool:
        """Log ``event`` unless one was logged within ``interval``; True if logged."""
        said = self.admit()
        if said is None:
            return False
        log.warning(event, suppressed=said[0], **fields)
        return True
