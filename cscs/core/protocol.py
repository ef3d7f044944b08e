"""Commands and acknowledgements on the wire (ICD §2), as pure functions.

Bytes come in, a :class:`CommandRequest` or a :class:`Refusal` (answer FAILED) or an
:class:`Unreadable` (no ``seq``/``origin`` to answer to: log and drop) comes out.
Nothing here touches a socket.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cscs.core.schema import Interface, Payload

__all__ = [
    "MAX_COMMAND_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_ORIGIN_LENGTH",
    "Ack",
    "AckCode",
    "CommandRequest",
    "Refusal",
    "Unreadable",
    "decode_json_object",
    "describe_validation_error",
    "encode",
    "oversized_event",
    "parse_command",
]

# A command's parameters are a few short strings and numbers; anything far larger is
# a mistake or an attack, refused before it costs more than a JSON parse.
MAX_COMMAND_BYTES = 64 * 1024
# Beyond this not even seq/origin are dug out: the payload is logged and dropped.
_MAX_PARSED_BYTES = 8 * 1024 * 1024
#: An event, telemetry sample or ack larger than this is dropped before it is parsed: the
#: largest the CSCs publish are a few hundred kB (a dashboard's alarms view), and a parse
#: of tens of MB holds a subscriber's event loop for seconds (issue 29).
MAX_EVENT_BYTES = _MAX_PARSED_BYTES
_TOPIC_SHOWN = 200  # characters of a refused message's topic said in the log line


class AckCode(enum.IntEnum):
    ACK = 300
    INPROGRESS = 301
    STALLED = 302
    COMPLETE = 303
    NOPERM = -300
    FAILED = -302
    ABORTED = -303
    TIMEOUT = -304

    @property
    def is_final(self) -> bool:
        return self not in (AckCode.ACK, AckCode.INPROGRESS)


@dataclass(frozen=True)
class Ack:
    """One acknowledgement of one command."""

    seq: int
    origin: str
    command: str
    code: AckCode
    result: str = ""
    error: int = 0
    timeout: float = 0.0
    sent_tai: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "origin": self.origin,
            "command": self.command,
            "ack": self.code.name,
            "code": int(self.code),
            "error": self.error,
            "result": self.result,
            "timeout": self.timeout,
            "sent_tai": self.sent_tai,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Ack:
        """Read an ack; raises ValueError naming the field that is wrong."""
        try:
            code = AckCode(data["code"])
            return cls(
                seq=_field(data, "seq", int),
                origin=_field(data, "origin", str),
                command=_field(data, "command", str),
                code=code,
                result=str(data.get("result", "")),
                error=int(data.get("error", 0)),
                timeout=float(data.get("timeout", 0.0)),
                sent_tai=float(data.get("sent_tai", 0.0)),
            )
        except KeyError as exc:
            raise ValueError(f"ack lacks field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ack is malformed: {exc}") from None


@dataclass(frozen=True)
class CommandRequest:
    """A well-formed command addressed to a command this CSC has, params validated."""

    command: str
    seq: int
    origin: str
    identity: str
    params: Payload
    sent_tai: float = 0.0


@dataclass(frozen=True)
class Refusal:
    """A command that can be answered (seq and origin are readable) but not run."""

    command: str
    seq: int
    origin: str
    reason: str


@dataclass(frozen=True)
class Unreadable:
    """A payload with no readable seq/origin: nobody to acknowledge."""

    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def oversized_event(topic: str, payload: bytes) -> dict[str, Any] | None:
    """The fields of the log line for a message too big to parse (None if it is not):
    the topic, cut to a length a log line can carry, and the size."""
    if len(payload) <= MAX_EVENT_BYTES:
        return None
    shown = topic if len(topic) <= _TOPIC_SHOWN else f"{topic[:_TOPIC_SHOWN]}..."
    return {"topic": shown, "bytes": len(payload), "limit": MAX_EVENT_BYTES}


def decode_json_object(payload: bytes) -> dict[str, Any]:
    """Decode a JSON object; raises ValueError with a reason a person can read."""
    try:
        # Decode first: json.loads(bytes) would guess UTF-16/32 from a BOM; the ICD says UTF-8.
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"payload is not JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise ValueError("payload is nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError(f"payload must be a JSON object, got {type(data).__name__}")
    return data


_MAX_SEQ = 2**63 - 1  # what any recorder of commands can store
#: A commander's client id: MQTT's are up to 23 characters in 3.1.1; the last 10 000
#: commands are remembered with theirs (answered once), so each is bounded.
MAX_ORIGIN_LENGTH = 256


def _field(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data[name]
    # bool is an int in Python but never a valid seq.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one sentence per problem, naming the parameter."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "params"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown parameter {where!r}")
        elif err["type"] == "missing":
            problems.append(f"missing parameter {where!r}")
        else:
            problems.append(
                f"parameter {where!r}: {err['msg'].lower()} (got {err.get('input')!r:.60})"
            )
    return "; ".join(problems)


def parse_command(
    command: str, payload: bytes, interface: Interface
) -> CommandRequest | Refusal | Unreadable:
    """Validate one command payload received on ``{root}/cmd/{command}``."""
    if len(payload) > _MAX_PARSED_BYTES:
        return Unreadable(f"{command}: payload of {len(payload)} bytes dropped unread")
    try:
        data = decode_json_object(payload)
    except ValueError as exc:
        return Unreadable(f"{command}: {exc}")
    try:
        seq = _field(data, "seq", int)
        origin = _field(data, "origin", str)
    except KeyError as exc:
        return Unreadable(f"{command}: payload lacks {exc.args[0]!r}", {"payload": data})
    except TypeError as exc:
        return Unreadable(f"{command}: {exc}")

    if len(origin) > MAX_ORIGIN_LENGTH:  # an answer would carry it back: dropped
        return Unreadable(f"{command}: origin of {len(origin)} characters (at most "
                          f"{MAX_ORIGIN_LENGTH})")  # fmt: skip

    def refuse(reason: str) -> Refusal:
        return Refusal(command, seq, origin, reason)

    if not 0 <= seq <= _MAX_SEQ:
        return refuse(f"seq {seq} is outside 0 to 2**63 - 1 (a database's BIGINT)")
    if len(payload) > MAX_COMMAND_BYTES:
        return refuse(
            f"payload of {len(payload)} bytes exceeds the limit of {MAX_COMMAND_BYTES} bytes"
        )
    spec = interface.command(command)
    if spec is None:
        return refuse(f"no such command: {command}")
    identity = data.get("identity")
    if not isinstance(identity, str) or not identity:
        return refuse("'identity' must be a non-empty string naming who commands")
    params = data.get("params", {})
    if not isinstance(params, dict):
        return refuse(f"'params' must be a JSON object, got {type(params).__name__}")
    sent_tai = data.get("sent_tai", 0.0)
    if isinstance(sent_tai, bool) or not isinstance(sent_tai, int | float):
        return refuse(f"'sent_tai' must be a number, got {type(sent_tai).__name__}")
    try:
        validated = spec.params.model_validate(params)
    except ValidationError as exc:
        return refuse(f"{command}: {describe_validation_error(exc)}")
    return CommandRequest(command, seq, origin, identity, validated, float(sent_tai))
