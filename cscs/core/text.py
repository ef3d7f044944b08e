"""Text from a peer, made fit to carry on: into an event, a log line, an exception.

A peer's text (a DAQ's error message, a name it lists) can be megabytes long and hold
newlines or terminal escapes; what we pass on is bounded and printable, and says how
long the original was, so that nothing is hidden and nothing floods.
"""

from __future__ import annotations

__all__ = ["peer_text"]


def peer_text(text: str, limit: int = 200) -> str:
    """``text`` with control characters shown as ``?``, cut to ``limit`` characters (the
    cut said, with the original length)."""
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return shown if len(text) <= limit else f"{shown}... ({len(text)} characters)"
