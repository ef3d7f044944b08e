"""Topic names of ICD §1: ``{prefix}/{Name}/{index}/{kind}/{name}``."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PREFIX",
    "CscAddress",
    "Kind",
    "ParsedTopic",
    "check_filter",
    "check_topic",
    "parse_topic",
    "topic_matches",
]

DEFAULT_PREFIX = "obs"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # fullmatch: "$" would let a final "\n" by


class Kind(enum.StrEnum):
    COMMAND = "cmd"
    ACK = "ack"
    EVENT = "evt"
    TELEMETRY = "tel"


@dataclass(frozen=True, order=True)
class CscAddress:
    """Which CSC: its name and index, plus the bus's topic prefix."""

    name: str
    index: int = 0
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"CSC name {self.name!r} must start with a letter and hold only letters, "
                "digits and underscores"
            )
        if self.index < 0:
            raise ValueError(f"CSC index must be 0 or positive, got {self.index}")

    @classmethod
    def parse(cls, text: str, prefix: str = DEFAULT_PREFIX) -> CscAddress:
        """Read ``Name`` or ``Name:index`` as operators write it (``Archiver:1``)."""
        name, sep, index = text.partition(":")
        if not sep:
            return cls(name, 0, prefix)
        try:
            return cls(name, int(index), prefix)
        except ValueError:
            raise ValueError(
                f"{text!r} is not NAME or NAME:INDEX with an integer index, e.g. Archiver:1"
            ) from None

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.name}/{self.index}"

    def __str__(self) -> str:
        return f"{self.name}:{self.index}"

    def command(self, name: str) -> str:
        return f"{self.root}/cmd/{name}"

    @property
    def ack(self) -> str:
        return f"{self.root}/ack"

    def event(self, name: str) -> str:
        return f"{self.root}/evt/{name}"

    def telemetry(self, name: str) -> str:
        return f"{self.root}/tel/{name}"


@dataclass(frozen=True)
class ParsedTopic:
    address: CscAddress
    kind: Kind
    name: str  # the command, event or telemetry name; "" for acks


def parse_topic(topic: str) -> ParsedTopic | None:
    """Split a topic of ICD §1; None for anything else (foreign traffic is ignored)."""
    parts = topic.split("/")
    try:
        if len(parts) == 4 and parts[3] == Kind.ACK:
            prefix, name, index, _ = parts
            return ParsedTopic(CscAddress(name, int(index), prefix), Kind.ACK, "")
        if len(parts) == 5 and parts[3] in {Kind.COMMAND, Kind.EVENT, Kind.TELEMETRY}:
            prefix, name, index, kind, item = parts
            if item:
                return ParsedTopic(CscAddress(name, int(index), prefix), Kind(kind), item)
    except ValueError:
        return None
    return None


def check_topic(topic: str) -> str:
    """``topic`` if one may publish on it (MQTT: not empty, no wildcard); else ValueError."""
    if not topic or "+" in topic or "#" in topic:
        raise ValueError(f"cannot publish on {topic!r}: a topic is not empty and has no + or #")
    return topic


def check_filter(topic_filter: str) -> str:
    """``topic_filter`` if MQTT accepts it: ``+`` a whole level, ``#`` the whole last,
    no NUL (MQTT 3.1.1 §1.5.3)."""
    if "\0" in topic_filter:
        raise ValueError(f"topic filter {topic_filter!r}: MQTT forbids the NUL character")
    levels = topic_filter.split("/")
    for position, level in enumerate(levels):
        misplaced_hash = "#" in level and (level != "#" or position != len(levels) - 1)
        if misplaced_hash or ("+" in level and level != "+"):
            raise ValueError(
                f"topic filter {topic_filter!r}: + must be a whole level and # the whole last one"
            )
    if not topic_filter:
        raise ValueError("a topic filter cannot be empty")
    return topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (MQTT 3.1.1 §4.7: ``+`` one level,
    ``#`` the rest, including none; wildcards at the first level skip ``$`` topics)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    wanted = topic_filter.split("/")
    levels = topic.split("/")
    for position, level in enumerate(wanted):
        if level == "#":
            return True
        if position >= len(levels) or (level != "+" and level != levels[position]):
            return False
    return len(wanted) == len(levels)
