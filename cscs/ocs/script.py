"""Observing scripts: a night written down as YAML steps, run against the bus.

A script is what an OCS operator would otherwise type command by command::

    name: short night
    vars: {index: 1, config: ""}          # defaults; `--set index=2` overrides
    steps:
      - say: calibrations
      - wait: {csc: "Camera:{index}", state: STANDBY, timeout: 60}
      - command: {csc: "Camera:{index}", name: start,
                  params: {configurationOverride: "{config}"}}
      - loop:
          over: [{band: g, ha: -1.0}, {band: r, ha: 0.5}]
          steps:
            - command: {csc: "Telescope:{index}", name: slew,
                        params: {ra: {hour_angle: "{ha}"}, dec: -40}}
      - command: {csc: "Camera:{index}", name: takeImages, expect: FAILED,
                  result: "not ENABLED"}

Steps: ``say`` (a heading), ``command`` (send, wait for the final ack, check it is
``expect``, COMPLETE unless said, and that ``result`` is part of its text), ``wait``
(for a ``state``, an ``event`` or ``telemetry`` message, optionally ``where`` fields
equal given values; a state or an event is met at once if its latest message already
matches, telemetry needs a sample that came after the step before began, and anything
the step before caused counts, since every CSC the script names is followed from the
start) and ``loop`` (``count`` times, or once per mapping in ``over``,
whose keys become variables). ``"{name}"`` in a string is replaced by the variable; a
string that is only ``"{name}"`` takes the variable's own type. ``{hour_angle: h}`` as
a value is the right ascension ``h`` hours west of the meridian when the step runs, so
a script's targets are up whenever it is run.

Parsing and expansion are pure (tested without a broker); running is
:func:`cscs.ocs.runner.run_script`, the only part that talks to the bus. A failing step
raises :class:`ScriptStepError`, whose message names the step, its line in the file, the
command and what came back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from cscs.core.protocol import AckCode
from cscs.core.states import State
from cscs.core.topics import CscAddress

__all__ = [
    "BoundStep",
    "Command",
    "Loop",
    "Say",
    "Script",
    "ScriptError",
    "ScriptStepError",
    "Wait",
    "expand",
    "load_script",
    "parse_script",
    "resolve_hour_angles",
    "substitute",
]

DEFAULT_TIMEOUT = 30.0
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ScriptError(ValueError):
    """The script file itself is wrong: it names the file, the line and the cause."""


class ScriptStepError(Exception):
    """A step did not have the outcome the script expects."""


# ---- the parsed script (pure data) ------------------------------------------------------


@dataclass(frozen=True)
class Say:
    text: str
    line: int


@dataclass(frozen=True)
class Command:
    csc: str
    name: str
    params: Mapping[str, Any]
    timeout: float
    expect: AckCode
    result: str
    line: int

    def describe(self) -> str:
        return f"command {self.name} to {self.csc}"


@dataclass(frozen=True)
class Wait:
    csc: str
    state: State | None
    event: str
    telemetry: str
    where: Mapping[str, Any]
    timeout: float
    line: int

    def describe(self) -> str:
        if self.state is not None:
            return f"wait for {self.csc} to be {self.state.name}"
        what = f"event {self.event}" if self.event else f"telemetry {self.telemetry}"
        where = ", ".join(f"{k}={v!r}" for k, v in self.where.items())
        return f"wait for {what} from {self.csc}" + (f" with {where}" if where else "")


@dataclass(frozen=True)
class Loop:
    bindings: tuple[Mapping[str, Any], ...]  # one per pass
    steps: tuple[Step, ...]
    line: int


Step = Say | Command | Wait | Loop


@dataclass(frozen=True)
class Script:
    name: str
    source: str  # file name, for messages
    variables: Mapping[str, Any]
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class BoundStep:
    """One step to run, its variables substituted; ``number`` counts from 1."""

    number: int
    step: Say | Command | Wait


# ---- parsing ---------------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """Keeps each mapping's line number (1-based) under the key ``__line__``."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != "__line__"}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def load_script(path: Path | str) -> Script:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScriptError(f"cannot read script {path}: {exc.strerror or exc}") from None
    return parse_script(text, source=str(path))


def parse_script(text: str, *, source: str = "<script>") -> Script:
    try:
        document = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise ScriptError(f"{source}: not valid YAML: {exc}") from None
    parser = _Parser(source)
    if not isinstance(document, dict):
        raise ScriptError(f"{source}: a script is a mapping with `steps:` (and `name:`, `vars:`)")
    parser.keys(document, {"name", "description", "vars", "steps"}, "the script")
    variables = _strip_lines(document.get("vars") or {})
    if not isinstance(variables, dict):
        raise parser.error(document, "`vars:` must be a mapping of names to values")
    steps = document.get("steps")
    if not isinstance(steps, list) or not steps:
        raise parser.error(document, "`steps:` must be a non-empty list")
    return Script(
        name=str(document.get("name", Path(source).stem)),
        source=source,
        variables=variables,
        steps=tuple(parser.step(s, document) for s in steps),
    )


@dataclass
class _Parser:
    source: str

    def error(self, where: Any, message: str) -> ScriptError:
        line = where.get("__line__") if isinstance(where, dict) else None
        return ScriptError(f"{self.source}" + (f", line {line}" if line else "") + f": {message}")

    def keys(self, mapping: dict[str, Any], allowed: set[str], what: str) -> None:
        unknown = sorted(str(k) for k in set(mapping) - allowed - {"__line__"})
        if unknown:
            raise self.error(
                mapping, f"{what} has unknown key(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )  # fmt: skip

    def step(self, raw: Any, parent: dict[str, Any]) -> Step:
        kinds = ("say", "command", "wait", "loop")
        if not isinstance(raw, dict) or len([k for k in raw if k != "__line__"]) != 1:
            raise self.error(
                raw if isinstance(raw, dict) else parent,
                f"each step is a mapping with exactly one of {', '.join(kinds)}; got {raw!r}",
            )
        (kind,) = (k for k in raw if k != "__line__")
        body, line = raw[kind], raw["__line__"]
        if kind == "say":
            return Say(str(body), line)
        if not isinstance(body, dict):
            raise self.error(raw, f"`{kind}:` takes a mapping")
        if kind == "command":
            return self.command(body, line)
        if kind == "wait":
            return self.wait(body, line)
        if kind == "loop":
            return self.loop(body, line)
        raise self.error(raw, f"unknown step {kind!r}; steps are {', '.join(kinds)}")

    def _csc(self, body: dict[str, Any], what: str) -> str:
        csc = body.get("csc")
        if not isinstance(csc, str) or not csc:
            raise self.error(body, f"{what} needs `csc: NAME:INDEX`, e.g. Camera:1")
        return csc

    def _timeout(self, body: dict[str, Any]) -> float:
        timeout = body.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise self.error(body, f"`timeout` must be a positive number of seconds: {timeout!r}")
        return float(timeout)

    def command(self, body: dict[str, Any], line: int) -> Command:
        self.keys(body, {"csc", "name", "params", "timeout", "expect", "result"}, "a command")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise self.error(body, "a command needs `name:`, e.g. name: enable")
        params = _strip_lines(body.get("params") or {})
        if not isinstance(params, dict):
            raise self.error(body, "`params:` must be a mapping")
        expect = str(body.get("expect", "COMPLETE")).upper()
        final = [c.name for c in AckCode if c.is_final]
        if expect not in final:
            raise self.error(body, f"`expect: {expect}` is not a final ack; one of {final}")
        return Command(
            self._csc(body, "a command"), name, params, self._timeout(body), AckCode[expect],
            str(body.get("result", "")), line,
        )  # fmt: skip

    def wait(self, body: dict[str, Any], line: int) -> Wait:
        self.keys(body, {"csc", "state", "event", "telemetry", "where", "timeout"}, "a wait")
        chosen = [k for k in ("state", "event", "telemetry") if k in body]
        if len(chosen) != 1:
            raise self.error(body, "a wait needs exactly one of `state`, `event`, `telemetry`")
        state = None
        if "state" in body:
            try:
                state = State[str(body["state"]).upper()]
            except KeyError:
                names = ", ".join(s.name for s in State)
                raise self.error(body, f"unknown state {body['state']!r}; one of {names}") from None
        where = _strip_lines(body.get("where") or {})
        if not isinstance(where, dict):
            raise self.error(body, "`where:` must be a mapping of field: value")
        return Wait(
            self._csc(body, "a wait"), state, str(body.get("event", "")),
            str(body.get("telemetry", "")), where, self._timeout(body), line,
        )  # fmt: skip

    def loop(self, body: dict[str, Any], line: int) -> Loop:
        self.keys(body, {"count", "over", "steps"}, "a loop")
        if ("count" in body) == ("over" in body):
            raise self.error(body, "a loop needs either `count: N` or `over: [mappings]`")
        if "count" in body:
            count = body["count"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise self.error(body, f"`count` must be a whole number ≥ 0: {count!r}")
            bindings: tuple[Mapping[str, Any], ...] = tuple({} for _ in range(count))
        else:
            over = _strip_lines(body["over"])
            if not isinstance(over, list) or not all(isinstance(b, dict) for b in over):
                raise self.error(body, "`over:` must be a list of mappings (variables per pass)")
            bindings = tuple(over)
        steps = body.get("steps")
        if not isinstance(steps, list) or not steps:
            raise self.error(body, "a loop needs a non-empty `steps:` list")
        return Loop(bindings, tuple(self.step(s, body) for s in steps), line)


# ---- expansion: variables, loops ---------------------------------------------------------


def substitute(value: Any, variables: Mapping[str, Any]) -> Any:
    """``"{name}"`` replaced by the variable, inside strings, lists and mappings."""
    if isinstance(value, str):
        whole = _VARIABLE.fullmatch(value)
        if whole and whole.group(1) in variables:
            return variables[whole.group(1)]

        def replace(match: re.Match[str]) -> str:
            if match.group(1) not in variables:
                raise KeyError(match.group(1))
            return str(variables[match.group(1)])

        return _VARIABLE.sub(replace, value)
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    return value


def expand(script: Script, overrides: Mapping[str, Any] | None = None) -> list[BoundStep]:
    """Every step in the order it runs, loops unrolled and variables substituted."""
    out: list[BoundStep] = []

    def checked(step: Step, variables: Mapping[str, Any], work: Callable[[], Any]) -> Any:
        """``work()``, its missing variable or bad address reported at ``step``'s line."""
        try:
            return work()
        except ValueError as exc:
            raise ScriptError(f"{script.source}, line {step.line}: {exc}") from None
        except KeyError as exc:
            raise ScriptError(
                f"{script.source}, line {step.line}: no variable {exc.args[0]!r}; "
                f"known: {', '.join(sorted(variables)) or 'none'}"
            ) from None

    def bind(step: Say | Command | Wait, variables: Mapping[str, Any]) -> Say | Command | Wait:
        bound = _bind(step, variables)
        if not isinstance(bound, Say):
            CscAddress.parse(bound.csc, "obs")  # every address checked before any runs
        return bound

    def walk(steps: tuple[Step, ...], variables: Mapping[str, Any]) -> Iterator[BoundStep]:
        for step in steps:
            if isinstance(step, Loop):
                for binding in step.bindings:  # a pass's values may use outer variables
                    values = checked(step, variables, partial(substitute, binding, variables))
                    yield from walk(step.steps, {**variables, **values})
                continue
            bound = checked(step, variables, partial(bind, step, variables))
            yield BoundStep(len(out) + 1, bound)

    for bound in walk(script.steps, {**script.variables, **(overrides or {})}):
        out.append(bound)
    return out


def _bind(step: Say | Command | Wait, variables: Mapping[str, Any]) -> Say | Command | Wait:
    if isinstance(step, Say):
        return Say(substitute(step.text, variables), step.line)
    if isinstance(step, Command):
        return Command(
            substitute(step.csc, variables), step.name, substitute(dict(step.params), variables),
            step.timeout, step.expect, substitute(step.result, variables), step.line,
        )  # fmt: skip
    return Wait(
        substitute(step.csc, variables), step.state, step.event, step.telemetry,
        substitute(dict(step.where), variables), step.timeout, step.line,
    )  # fmt: skip


def resolve_hour_angles(value: Any, lst_deg: float) -> Any:
    """``{hour_angle: h}`` → the RA (deg) that is ``h`` hours west of the meridian."""
    if isinstance(value, dict):
        if set(value) == {"hour_angle"}:
            hours = float(value["hour_angle"])
            return round((lst_deg - 15.0 * hours) % 360.0, 6)
        return {k: resolve_hour_angles(v, lst_deg) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_hour_angles(v, lst_deg) for v in value]
    return value
