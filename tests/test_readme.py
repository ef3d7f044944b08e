"""The README is the first thing a new user follows: every file it names exists and
every `make` target it tells them to run is one the Makefile has. A moved module or a
renamed target fails here, not in a user's terminal."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PATH = re.compile(r"`((?:cscs|sim|tests|docs|benchmarks|requirements|tools|\.ci)/[\w./-]*)`")


def test_every_path_the_readme_names_exists() -> None:
    named = sorted(set(PATH.findall(README)))
    assert len(named) > 30  # the "What works" list names its tests and docs
    missing = [path for path in named if not (ROOT / path).exists()]
    assert missing == []


def test_every_make_target_the_readme_names_exists() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", README))
    assert {"demo", "test", "test-fast", "test-long", "lock"} <= named
    assert named - targets == set()
