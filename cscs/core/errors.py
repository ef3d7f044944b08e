"""Exceptions that carry meaning for the command protocol."""

from __future__ import annotations

__all__ = ["ConfigurationError", "ExpectedError"]


class ExpectedError(Exception):
    """A refusal or failure a person can act on.

    A command handler raises it to have the command acknowledged ``FAILED`` with this
    message and no traceback; any other exception is treated as a bug and logged with one.
    """


class ConfigurationError(ExpectedError):
    """A configuration file is missing, unreadable or does not match its schema."""
