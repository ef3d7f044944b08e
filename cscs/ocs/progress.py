"""How a script or the demo shows its progress: lines of text, and on a terminal a live
bar below them (``rich``). Piped into a file or a CI log, it writes plain lines only, so
the log reads the same as the screen without the bar."""

from __future__ import annotations

import io
import sys
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

__all__ = ["Progress"]


class Progress:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.console = Console(file=out, highlight=False)
        self.live = self.console.is_terminal
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    @classmethod
    def silent(cls) -> Progress:
        """A progress that shows nothing (for a caller that reports otherwise)."""
        return cls(io.StringIO())

    def say(self, text: str) -> None:
        """A line (above the bar, when there is one)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, soft_wrap=True)
        else:
            print(text, file=self.out, flush=True)

    def step(self, number: int, total: int, label: str) -> None:
        """Step ``number`` of ``total`` begins: on a terminal, the bar says so."""
        if not self.live:
            return
        if self._bar is None:
            self._bar = RichProgress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=total)
        assert self._task is not None
        self._bar.update(self._task, completed=number - 1, total=total, description=label[:60])

    def done(self) -> None:
        """Take the bar away (the lines stay)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self._task = None
