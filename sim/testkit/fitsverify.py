"""HEASARC's ``fitsverify`` on archived files: what the FITS standard refuses in them.

A file whose checksums all pass can still be one the standard refuses (a typed keyword
with no value, issue 29): only an independent verifier sees it. Tests of whole nights run
it on every file they archived. It is an external program (Debian's ``fitsverify``), so
:func:`fitsverify_problems` says when it is not there rather than pass unverified files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

__all__ = ["fitsverify_problems"]

_BATCH = 200  # files per run: one process per batch, not per file
_DETAIL_LINES = 20  # of fitsverify's report, for each refused file
# The one warning that is no fault: a keyword with no value, which the standard allows
# (FITS 4.0 §4.2.1) for every keyword it does not type. For a typed one (WCSAXES…)
# fitsverify reports an error, so the tolerance cannot hide one.
_UNDEFINED = re.compile(r"\*\*\* Warning: +Keyword #[0-9]+, [A-Z0-9_-]+ has a null value\.")


def fitsverify_problems(paths: Iterable[Path]) -> list[str] | None:
    """What fitsverify finds wrong with ``paths`` (empty: every file is clean: no error,
    no warning but that a keyword the standard does not type has no value); None if
    fitsverify is not installed. Blocking: run it in a thread from a coroutine."""
    program = shutil.which("fitsverify")
    if program is None:
        return None
    files = [str(p) for p in paths]
    problems: list[str] = []
    for start in range(0, len(files), _BATCH):
        batch = files[start : start + _BATCH]
        run = subprocess.run([program, "-q", *batch], capture_output=True, text=True, check=False)
        verdicts = dict(_verdict(line) for line in run.stdout.splitlines() if ": " in line)
        for name in batch:
            verdict = verdicts.get(name)
            if verdict is None:
                problems.append(f"{name}: fitsverify said nothing of it: {run.stderr[-300:]}")
            elif not verdict.startswith("verification OK"):
                found = _findings(program, name)
                if found:
                    problems.append("\n  ".join([verdict, *found[:_DETAIL_LINES]]))
    return problems


def _verdict(line: str) -> tuple[str, str]:
    """A line of ``fitsverify -q``: ``verification OK: NAME`` or ``verification FAILED:
    NAME , 0 warnings and 15 errors``, as (NAME, the line)."""
    name = line.split(": ", 1)[1].rsplit(",", 1)[0] if "," in line else line.split(": ", 1)[1]
    return name.strip(), line.strip()


def _findings(program: str, name: str) -> list[str]:
    """fitsverify's errors and warnings for one file, but for keywords left undefined."""
    run = subprocess.run([program, name], capture_output=True, text=True, check=False)
    report = (run.stdout + run.stderr).splitlines()  # errors go to stderr
    found = [line.strip() for line in report if line.lstrip().startswith("***")]
    return [
        line
        for line in found
        if not _UNDEFINED.fullmatch(line) and "Verification found" not in line
    ]
