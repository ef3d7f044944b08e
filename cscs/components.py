"""Every CSC that ``cscs run NAME`` can start, found through a Python entry-point group.

A package makes a CSC runnable by naming its class in the ``cscs.components`` group of
its ``pyproject.toml``, as this project does for its own components and for the
simulators in ``sim/`` (which ``cscs`` itself never imports)::

    [project.entry-points."cscs.components"]
    Archiver = "cscs.archiver.csc:ArchiverCsc"

Extra ``cscs`` subcommands come the same way, from the ``cscs.commands`` group: each
entry is a function given the argument parser's subparsers, which adds its own.
Nothing is imported until it is asked for, so starting one CSC imports no other.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from cscs.core.csc import BaseCsc

__all__ = [
    "COMMANDS_GROUP",
    "COMPONENTS_GROUP",
    "PROJECT",
    "all_classes",
    "command_plugins",
    "find",
    "names",
]

COMPONENTS_GROUP = "cscs.components"
COMMANDS_GROUP = "cscs.commands"


PROJECT = "cscs"  # the distribution of this project's own components


def _components(distribution: str | None = None) -> dict[str, EntryPoint]:
    return {
        entry.name: entry
        for entry in entry_points(group=COMPONENTS_GROUP)
        if distribution is None or (entry.dist is not None and entry.dist.name == distribution)
    }


def names(distribution: str | None = None) -> list[str]:
    """The names of every CSC installed (of one distribution, if given), sorted."""
    return sorted(_components(distribution), key=str.lower)


def find(name: str) -> type[BaseCsc[Any]]:
    """The CSC class named ``name`` (case-insensitive); ValueError listing the names."""
    components = _components()
    entry = next((e for n, e in components.items() if n.lower() == name.lower()), None)
    if entry is None:
        known = ", ".join(names()) or (
            "none: no package registers any (is cscs installed? `pip install -e .`)"
        )
        raise ValueError(f"no CSC named {name!r}; known: {known}")
    cls = entry.load()
    if not (isinstance(cls, type) and issubclass(cls, BaseCsc)):
        raise TypeError(f"entry point {entry.name} = {entry.value} is not a CSC class")
    return cls


def all_classes(distribution: str | None = None) -> list[type[BaseCsc[Any]]]:
    """Every installed CSC class, or one distribution's (imports them all)."""
    return [find(name) for name in names(distribution)]


def command_plugins() -> list[EntryPoint]:
    """The entry points of the ``cscs.commands`` group, sorted by name."""
    return sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name)
