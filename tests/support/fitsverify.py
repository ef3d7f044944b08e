"""fitsverify in the tests: every archived file of a night checked against the FITS
standard (:func:`sim.testkit.fitsverify.fitsverify_problems`); skipped, saying so, only
where fitsverify is not installed (``.ci/run`` installs it)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from sim.testkit.fitsverify import fitsverify_problems

__all__ = ["assert_fitsverify_clean"]


def assert_fitsverify_clean(paths: Iterable[Path]) -> int:
    """Fail naming each file fitsverify refuses (an error or a warning); the number of
    files checked. Skips the test when fitsverify is not installed."""
    files = sorted(paths)
    assert files, "no archived file to verify"
    problems = fitsverify_problems(files)
    if problems is None:
        pytest.skip(
            "fitsverify is not installed (Debian package fitsverify): the archived files "
            "were not checked against the FITS standard"
        )
    assert problems == [], f"{len(problems)} of {len(files)} files refused:\n" + "\n".join(
        problems[:5]
    )
    return len(files)
